"""Training throughput of train.py itself: tokens/s, MFU and peak memory at fixed model shapes.

    # every shape, its default variants, one GPU
    python bench/throughput.py
    python bench/throughput.py --shapes gpt2-124m --variants m16a1,m16a8,m32a4
    # DDP: the same per-GPU work on 2 GPUs
    python bench/throughput.py --shapes gpt2-124m --variants m16a8 --gpus 2
    python bench/throughput.py --check_loss data/offline_english --shapes gpt2-124m \
        --variants m16a4-eager,m16a4,m32a2
    # that checkout's train.py: a before/after comparison
    python bench/throughput.py --repo /path/to/other/checkout ...

A variant is mMaA[-eager][+key=value...]: micro-batch M sequences per GPU, A accumulation micro-steps per
optimizer step (so the global batch is M x A x GPUs sequences), torch.compile unless -eager, and any further
train.py overrides, e.g. m16a8+attention=cudnn or m16a8+compile_scope=blocks. Each measurement is one
`train.py` process (torchrun for --gpus > 1) on synthetic bins of uniform random tokens, exactly as a user
runs it: the log's tok/s per --log_every steps, the first interval dropped (compile, step-0 eval), the median
of the next --intervals reported, then the process is killed (no checkpoint is written). MFU is train.py's:
FLOPs/token = 6N + 12*L*d*T (PaLM) over 989 TFLOP/s per GPU. The "floor" column turns the same FLOPs into the
tok/s of the ~790 TFLOP/s bf16 matmul rate measured on this H200: about the fastest any version of the step
can run (the attention term counts the full T x T product, which causal kernels halve, so it can be beaten by
a few %).

--check_loss DATA trains each variant to the end on real bins (one GPU, the same seed, and the same global
batch: micro x accumulation must agree) and prints the largest train-loss difference from the first variant,
which should be the plain path (e.g. m16a4-eager): a speed-up must not change what is learned beyond bf16
noise. Each run's checkpoint is deleted once it ends (its log holds the curve)."""

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from inheritune.data import META_FORMAT  # noqa: E402
from inheritune.runs import read_log  # noqa: E402
from model import GPT  # noqa: E402
from train import load_config, model_config  # noqa: E402

MATMUL_CEILING = 790e12  # bf16 dense, measured on an H200 (8192^3 matmul, random data)
PEAK = 989e12  # the datasheet number MFU is quoted against

SHAPES = {  # train.py overrides; the variants run when --variants is not given (nanoGPT's micro-batch first)
    "gpt2-124m": (
        ["--arch=gpt2", "--n_layer=12", "--n_head=12", "--n_embd=768", "--block_size=1024"],
        50257,
        "m16a1,m16a8,m32a4",
    ),
    "gpt2-350m": (
        ["--arch=gpt2", "--n_layer=24", "--n_head=16", "--n_embd=1024", "--block_size=1024"],
        50257,
        "m16a1,m16a8,m32a4",
    ),
    "gpt2-774m": (
        ["--arch=gpt2", "--n_layer=36", "--n_head=20", "--n_embd=1280", "--block_size=1024"],
        50257,
        "m8a1,m8a8,m16a4",
    ),
    # the paper's 1.5B target: OpenLLaMA-3B's shapes, its first 13 of 26 layers
    "openllama3b-13l": (
        [
            "--arch=llama",
            "--n_layer=13",
            "--n_head=32",
            "--n_embd=3200",
            "--intermediate_size=8640",
            "--block_size=2048",
            "--tie_embeddings=False",
            "--bias=False",
        ],
        32000,
        "m4a8,m8a4",
    ),
    # CPU
    "tiny": (
        ["--arch=gpt2", "--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=64"],
        512,
        "m2a2-eager",
    ),
}
# --kd: a student shape -> its teacher's, twice as deep (a random model: speed does not depend on the weights)
TEACHERS = {"gpt2-774m-18l": "gpt2-774m", "openllama3b-13l": "openllama3b-26l", "tiny-1l": "tiny"}
SHAPES["gpt2-774m-18l"] = ([*SHAPES["gpt2-774m"][0], "--n_layer=18"], 50257, "m16a4+compile_scope=blocks")
SHAPES["openllama3b-26l"] = ([*SHAPES["openllama3b-13l"][0], "--n_layer=26"], 32000, "m4a8")
SHAPES["tiny-1l"] = ([*SHAPES["tiny"][0], "--n_layer=1"], 512, "m2a2-eager")
VARIANT = re.compile(r"m(\d+)a(\d+)(-eager)?((?:\+\w+=[\w.-]+)*)$")


def meta_model(shape: str) -> GPT:
    """The shape's model as train.py builds it from scratch, on the meta device (no memory)."""
    overrides, vocab_size, _ = SHAPES[shape]
    with torch.device("meta"):
        return GPT(model_config(load_config(overrides), vocab_size))


def flops_per_token(shape: str) -> float:
    """train.py's FLOPs per trained token for a shape (6N + 12*L*d*T)."""
    return meta_model(shape).flops_per_token()


def synthetic_bins(folder: Path, vocab_size: int, tokens: int = 1 << 24) -> Path:
    """Uniform random tokens in prepare_owt.py's format (meta.json + train.bin + val.bin), made once per
    folder."""
    if (folder / "meta.json").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    meta = {
        "format": META_FORMAT,
        "dtype": "uint16",
        "vocab_size": vocab_size,
        "tokenizer": {"name": "synthetic-uniform", "hash": None, "vocab_size": vocab_size},
        "max_token_id": vocab_size - 1,
    }
    # val: the step-0 eval (2 x micro x 1024) of micro-batches below 512
    for split, n in (("train", tokens), ("val", 1 << 20)):
        rng.integers(0, vocab_size, n, dtype=np.uint16).tofile(folder / f"{split}.bin")
        meta[split] = {"file": f"{split}.bin", "tokens": n, "documents": 1}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def parse_variant(name: str) -> tuple[int, int, bool, list[str]]:
    """'m16a8-eager+attention=cudnn' -> (16, 8, True, ['--attention=cudnn'])"""
    m = VARIANT.match(name)
    if not m:
        sys.exit(
            f"error: variant '{name}' is not mMaA[-eager][+key=value...] (e.g. m16a8, m16a4-eager, "
            f"m16a8+attention=cudnn)"
        )
    return int(m[1]), int(m[2]), bool(m[3]), [f"--{kv}" for kv in m[4].split("+")[1:]]


def launch(repo: Path, gpus: int, args: list[str], log_file: Path) -> subprocess.Popen:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
        if gpus > 1
        else [sys.executable]
    )
    return subprocess.Popen(
        [*launcher, "train.py", *args],
        cwd=repo,
        stdout=open(log_file, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the run: torchrun starts each rank in a session of its own, so kill those groups first."""
    ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    for pid in [*map(int, ranks), proc.pid]:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:  # already gone (finished, or failed before the timed steps)
            pass
    proc.wait()


def records(out_dir: Path) -> list[dict]:
    return read_log(out_dir / "log.jsonl")[1:]


def train_args(shape: str, variant: str, gpus: int, data, out, log_every: int = 10, **keys) -> list[str]:
    """train.py's arguments for a run of the variant: by default a timed run (constant learning rate, no eval
    or checkpoint after step 0); `keys` replace those defaults, and the variant's own +key=value come last and
    win."""
    micro, accum, eager, extra = parse_variant(variant)
    keys = {
        "max_iters": 1_000_000,
        "warmup_iters": 10,
        "eval_interval": 1_000_000,
        "eval_tokens": micro * 2048,
        "checkpoint_interval": 1_000_000,
        "learning_rate": 3e-4,
        **keys,
    }
    return [
        *SHAPES[shape][0],
        f"--data_dir={data}",
        f"--out_dir={out}",
        f"--micro_batch_size={micro}",
        f"--batch_size={micro * accum * gpus}",
        f"--log_interval={log_every}",
        f"--compile={not eager}",
        "--dtype=bfloat16",
        *(f"--{k}={v}" for k, v in keys.items()),
        *extra,
    ]


def measure(repo, shape, variant, gpus, data, work, log_every, intervals, timeout, **keys) -> dict:
    """One train.py run at (shape, variant, gpus), with any further train.py keys: the median tok/s of
    `intervals` log intervals after the first."""
    micro, accum, eager, _ = parse_variant(variant)
    out = Path(tempfile.mkdtemp(dir=work, prefix=f"{shape}_{variant}_{gpus}gpu_"))
    args = train_args(shape, variant, gpus, data, out, log_every, **keys)
    proc = launch(repo, gpus, args, out / "stdout.txt")
    deadline, timed = time.time() + timeout, []
    # the run, in a session of its own, is killed whatever stops the wait (a Ctrl-C, a closed stdout)
    try:
        while time.time() < deadline and proc.poll() is None:
            timed = [r for r in records(out) if "tok_per_s" in r]
            if len(timed) > intervals:
                break
            time.sleep(1)
    finally:
        kill(proc)
    result = {
        "shape": shape,
        "variant": variant,
        "gpus": gpus,
        "micro": micro,
        "accum": accum,
        "compile": not eager,
        "kd_ratio": keys.get("kd_ratio", 0),
    }
    if len(timed) < 2:
        tail = (out / "stdout.txt").read_text()[-1500:]
        return {**result, "error": f"no timed interval within {timeout}s (OOM?): ...{tail}"}
    rates = [r["tok_per_s"] for r in timed[1 : intervals + 1]]
    tok_s, flops = statistics.median(rates), flops_per_token(shape)
    return {
        **result,
        "tok_per_s": tok_s,
        "spread": (min(rates), max(rates)),
        "mfu": tok_s * flops / (PEAK * gpus),
        "floor_tok_per_s": MATMUL_CEILING * gpus / flops,
        "peak_mem_gb": max(r.get("peak_mem_gb", 0) for r in timed),
        "loss": timed[-1]["train_loss"],
    }


def check_loss(repo, shape, variants, data, work, steps) -> None:
    """Train every variant to `steps` on real data with the same global batch and seed; compare train-loss
    curves."""
    batches = {v: math.prod(parse_variant(v)[:2]) for v in variants}  # micro x accumulation
    if len(set(batches.values())) > 1:
        sys.exit(f"error: --check_loss compares one global batch; micro x accumulation differs: {batches}")
    curves = {}
    batch = next(iter(batches.values()))
    for variant in variants:
        out = Path(tempfile.mkdtemp(dir=work, prefix=f"check_{shape}_{variant}_"))
        args = train_args(
            shape,
            variant,
            1,
            data,
            out,
            max_iters=steps,
            warmup_iters=steps // 10,
            eval_interval=steps,
            eval_tokens=262144,
            checkpoint_interval=steps,
            learning_rate=6e-4,
            min_lr=6e-5,
        )
        proc = launch(repo, 1, args, out / "stdout.txt")
        try:
            failed = proc.wait()
        finally:  # a Ctrl-C here stops the run too: it runs in a session of its own
            if proc.poll() is None:
                kill(proc)
        # the curve is in the log; at 1.5B a checkpoint holds ~23 GB
        (out / "ckpt.pt").unlink(missing_ok=True)
        if failed:
            sys.exit(f"error: {variant} failed; see {out / 'stdout.txt'}")
        recs = records(out)
        curves[variant] = (
            {r["step"]: r["train_loss"] for r in recs if "train_loss" in r},
            [r["val_loss"] for r in recs if "val_loss" in r][-1],
        )
    base = curves[variants[0]][0]
    print(
        f"\nloss check, {shape}, {steps} steps of {batch} sequences, same seed and data; differences from "
        f"{variants[0]}:\n| variant | max abs train-loss diff | at step | final train loss | final val loss |"
        "\n|---|---|---|---|---|"
    )
    for v, (train, val) in curves.items():
        diff, at = max((abs(loss - base[s]), s) for s, loss in train.items())
        print(f"| {v} | {diff:.4f} | {at} | {train[max(train)]:.4f} | {val:.4f} |")
    print("curves:", json.dumps({v: sorted(train.items()) for v, (train, _) in curves.items()}))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    p.add_argument("--variants", help="comma-separated mMaA[-eager]; default: each shape's own list")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--repo", default=str(ROOT), help="checkout whose train.py runs (default: this one)")
    p.add_argument("--work", default=None, help="scratch folder for bins and runs (default: a temp dir)")
    p.add_argument("--log_every", type=int, default=10, help="steps per timed interval")
    p.add_argument("--intervals", type=int, default=5, help="timed intervals per measurement (median)")
    p.add_argument("--timeout", type=int, default=420, help="seconds per measurement, compile included")
    p.add_argument("--check_loss", metavar="DATA", help="real token bins: compare the variants' loss curves")
    p.add_argument("--steps", type=int, default=300, help="--check_loss: training steps")
    p.add_argument("--json", help="append every result here as a JSON line")
    p.add_argument(
        "--kd",
        type=float,
        metavar="RATIO",
        help=f"distillation's cost: each variant without and with kd_ratio=RATIO from a random teacher twice "
        f"the depth, back to back (shapes: {', '.join(TEACHERS)})",
    )
    p.add_argument(
        "--repeat", type=int, default=1, help="--kd: measure each pair this many times, alternating"
    )
    args = p.parse_args()
    args.shapes = args.shapes.split(",")
    for s in args.shapes:
        if s not in SHAPES:
            sys.exit(f"error: unknown shape '{s}'; choose from {', '.join(SHAPES)}")
        if args.kd is not None and s not in TEACHERS:
            sys.exit(f"error: --kd measures the student shapes {', '.join(TEACHERS)}; not '{s}'")
    return args


def main():
    args = parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="inheritune_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.check_loss:
        for s in args.shapes:
            variants = (args.variants or SHAPES[s][2]).split(",")
            check_loss(Path(args.repo), s, variants, args.check_loss, work, args.steps)
        return
    if args.kd is not None:
        for s in args.shapes:
            distillation_cost(args, s, work)
        return
    for s in args.shapes:
        f = flops_per_token(s)
        print(f"{s}: {f / 1e9:.3f} GFLOP/token; floor {MATMUL_CEILING / f:,.0f} tok/s per GPU at 790 TFLOP/s")
    print("| shape | variant | GPUs | tok/s (min-max) | MFU | floor tok/s | of floor | peak GB |", flush=True)
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for s in args.shapes:
        data = synthetic_bins(work / f"bins_{SHAPES[s][1]}", SHAPES[s][1])
        for v in (args.variants or SHAPES[s][2]).split(","):
            timing = args.log_every, args.intervals, args.timeout
            r = measure(Path(args.repo), s, v, args.gpus, data, work, *timing)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")
            print(table_row(s, v, args.gpus, r), flush=True)


def teacher_checkpoint(shape: str, folder: Path) -> Path:
    """A random model of the teacher shape, in bfloat16, written once per folder."""
    from model import empty_model
    from weights import save_checkpoint

    path = folder / f"teacher_{shape}.pt"
    if not path.exists():
        overrides, vocab_size, _ = SHAPES[shape]
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = empty_model(model_config(load_config(overrides), vocab_size), device, torch.bfloat16)
        model.init_weights()
        save_checkpoint(path, model)
    return path


def distillation_cost(args, shape: str, work: Path) -> None:
    """Each variant without and with distillation from a teacher twice as deep, back to back (--repeat
    times); then KD's step-time overhead against its bound, the teacher's forward share of the FLOPs
    (2 N_teacher + attention, over the student's 6 N + attention), and its peak memory against the plain
    run's plus the teacher's bfloat16 weights."""
    teacher = TEACHERS[shape]
    data = synthetic_bins(work / f"bins_{SHAPES[shape][1]}", SHAPES[shape][1])
    kd = {"kd_ratio": args.kd, "teacher": teacher_checkpoint(teacher, work)}
    bound = flops_per_token(teacher) / 3 / flops_per_token(shape)
    teacher_gb = meta_model(teacher).num_params() * 2 / 2**30
    print(f"{shape} <- {teacher}: the teacher's forward is {bound:.1%} of the student's training FLOPs")
    print("| shape | variant | kd_ratio | tok/s (min-max) | peak GB |\n|---|---|---|---|---|", flush=True)
    results = {}
    for variant in (args.variants or SHAPES[shape][2]).split(","):
        for _ in range(args.repeat):
            for keys in ({}, kd):
                timing = args.log_every, args.intervals, args.timeout
                r = measure(Path(args.repo), shape, variant, 1, data, work, *timing, **keys)
                results.setdefault((variant, bool(keys)), []).append(r)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(r, default=str) + "\n")
                print(kd_row(r), flush=True)
    print(
        "\n| variant | plain tok/s | KD tok/s | step-time overhead | bound | overhead / bound "
        "| peak GB: plain | KD | plain + teacher's weights | KD / that |\n" + "|---" * 10 + "|"
    )
    for variant in (args.variants or SHAPES[shape][2]).split(","):
        print(kd_summary(variant, results[variant, False], results[variant, True], bound, teacher_gb))


def kd_row(r: dict) -> str:
    if "error" in r:
        return f"| {r['shape']} | {r['variant']} | {r['kd_ratio']} | failed: {r['error'][-300:]!r} |"
    low, high = r["spread"]
    return (
        f"| {r['shape']} | {r['variant']} | {r['kd_ratio']} | {r['tok_per_s']:,.0f} ({low:,.0f}-{high:,.0f}) "
        f"| {r['peak_mem_gb']:.1f} |"
    )


def kd_summary(variant: str, plain: list, distilled: list, bound: float, teacher_gb: float) -> str:
    """One variant's medians over the repeats: KD's step-time overhead against its bound, and its memory."""
    if any("error" in r for r in plain + distilled):
        return f"| {variant} | a run failed (see above) |"
    tok_plain = statistics.median(r["tok_per_s"] for r in plain)
    tok_kd = statistics.median(r["tok_per_s"] for r in distilled)
    mem_plain = max(r["peak_mem_gb"] for r in plain)
    mem_kd = max(r["peak_mem_gb"] for r in distilled)
    overhead = tok_plain / tok_kd - 1
    allowed = mem_plain + teacher_gb
    return (
        f"| {variant} | {tok_plain:,.0f} | {tok_kd:,.0f} | {overhead:+.1%} | {bound:.1%} | "
        f"{overhead / bound:.2f} | {mem_plain:.1f} | {mem_kd:.1f} | {allowed:.1f} | {mem_kd / allowed:.2f} |"
    )


def table_row(shape: str, variant: str, gpus: int, r: dict) -> str:
    if "error" in r:
        return f"| {shape} | {variant} | {gpus} | failed: {r['error'][-300:]!r} |"
    low, high = r["spread"]
    return (
        f"| {shape} | {variant} | {gpus} | {r['tok_per_s']:,.0f} ({low:,.0f}-{high:,.0f}) | {r['mfu']:.1%} | "
        f"{r['floor_tok_per_s']:,.0f} | {r['tok_per_s'] / r['floor_tok_per_s']:.0%} | "
        f"{r['peak_mem_gb']:.1f} |"
    )


if __name__ == "__main__":
    main()
