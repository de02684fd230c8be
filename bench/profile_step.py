"""Where a training step's time goes: train.py's own run under torch.profiler, time by kernel class.

    python bench/profile_step.py --shape gpt2-124m --variant m16a1         # one GPU
    python bench/profile_step.py --shape tiny --variant m2a2-eager         # CPU: operator self time instead
    # also a chrome://tracing / Perfetto trace
    python bench/profile_step.py ... --trace step.json

bench/throughput.py says how fast a step is; this says why. It runs train.py's main() in this process on
bench/throughput.py's synthetic bins with its arguments for the variant, lets it compile and settle for --skip
optimizer steps, profiles the next --steps (the profiler follows the optimizer through a global post-step
hook, so no line of train.py changes), and stops the run there. It prints the profiled steps' wall time and
tok/s, and the GPU's busy time split into classes (matmul, attention, the compiled fused kernels by what they
fuse, optimizer, copies, ...). The gap between wall time and busy time is the GPU waiting on the host. The
profiler adds a little host overhead, so read tok/s from bench/throughput.py and the shares from here."""

import argparse
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.profiler import ProfilerActivity, profile, schedule

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import throughput as bench  # noqa: E402  (bench/throughput.py: shapes, variants, bins)

import train  # noqa: E402

# first match wins; kernel names on CUDA (cuBLAS, flash/cuDNN, inductor's triton_*), aten ops on CPU
CLASSES = [
    ("optimizer (AdamW, grad clip)", r"adam|multi_tensor|foreach|clip_grad|_fused_adam"),
    ("all-reduce (NCCL)", r"nccl"),
    ("matmul", r"gemm|nvjet|cutlass|xmma|cublas|aten::(add)?mm$|aten::bmm$|aten::linear$|matmul"),
    ("attention", r"flash|fmha|cudnn|attention|sdpa|efficient"),
    ("cross-entropy", r"softmax|nll|cross_entropy|logsumexp|_exp_"),
    ("norms", r"layer_norm|layernorm|rms|rsqrt|var_mean|native_layer"),
    ("embedding", r"embedding|index_put|scatter|gather|index_select"),
    ("copies and casts", r"memcpy|memset|copy_|_to_copy|aten::to$|cast"),
    ("other fused / elementwise", r"triton|elementwise|vectorized|aten::"),
]


class ProfileDone(Exception):
    pass


def kernel_class(name: str) -> str:
    low = name.lower()
    return next((label for label, pattern in CLASSES if re.search(pattern, low)), "other")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="gpt2-124m", choices=list(bench.SHAPES))
    p.add_argument("--variant", default="m16a1", help="bench/throughput.py's mMaA[-eager][+key=value...]")
    p.add_argument("--skip", type=int, default=8, help="optimizer steps before profiling (compile, warm-up)")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps profiled")
    p.add_argument(
        "--work", default=None, help="scratch folder for the bins and the run (default: a temp dir)"
    )
    p.add_argument("--trace", help="write the profiled steps as a Chrome/Perfetto trace here")
    p.add_argument("--top", type=int, default=12, help="also list this many single kernels by time")
    args = p.parse_args()
    if args.skip < 1 or args.steps < 1:
        sys.exit("error: --skip and --steps must be at least 1")
    if not torch.cuda.is_available() and args.shape != "tiny":
        sys.exit(
            f"error: no CUDA device for --shape {args.shape} (see CUDA_VISIBLE_DEVICES); CPU: --shape tiny"
        )
    return args


def profile_train(args, argv: list[str], cuda: bool):
    """train.py's main(argv) in this process, profiled from optimizer step --skip for --steps steps, then
    stopped; returns (the profile, the profiled steps' wall time in seconds)."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    steps, marks = 0, {}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(
        activities=activities, schedule=schedule(wait=args.skip - 1, warmup=1, active=args.steps)
    ) as prof:

        def after_optimizer_step(*_):
            nonlocal steps
            steps += 1
            # two syncs mark the window, before the profiler's own start/stop work in prof.step()
            if steps in (args.skip, args.skip + args.steps):
                sync()
                marks[steps] = time.perf_counter()
            prof.step()
            if steps == args.skip + args.steps:
                raise ProfileDone

        hook = register_optimizer_step_post_hook(after_optimizer_step)
        try:
            train.main(argv)
            sys.exit("error: train.py ended before the profiled steps; lower --skip/--steps")
        except ProfileDone:
            pass
        finally:
            hook.remove()
    return prof, marks[args.skip + args.steps] - marks[args.skip]


def kernel_rows(prof, cuda: bool) -> list[tuple[str, float, int]]:
    """(name, self time in us, calls) of every kernel (CUDA) or aten operator (CPU) that took time."""
    # user annotations (ProfilerStep#N, Optimizer.step#AdamW.step) also show up on the GPU's timeline: they
    # span kernels already counted, so they are left out
    events = [
        e
        for e in prof.key_averages()
        if not getattr(e, "is_user_annotation", False)
        and not e.key.startswith(("ProfilerStep", "Optimizer."))
    ]
    if cuda:  # the kernels themselves; failing that, the device time the host-side ops launched
        rows = [
            (e.key, e.self_device_time_total, e.count) for e in events if e.device_type == DeviceType.CUDA
        ]
        rows = rows or [
            (e.key, e.self_device_time_total, e.count) for e in events if e.device_type == DeviceType.CPU
        ]
    else:
        rows = [(e.key, e.self_cpu_time_total, e.count) for e in events if e.key.startswith("aten::")]
    return [r for r in rows if r[1] > 0]


def main():
    args = parse_args()
    cuda = torch.cuda.is_available()
    work = Path(args.work or tempfile.mkdtemp(prefix="inheritune_profile_"))
    work.mkdir(parents=True, exist_ok=True)
    vocab = bench.SHAPES[args.shape][1]
    data = bench.synthetic_bins(work / f"bins_{vocab}", vocab)
    out = Path(tempfile.mkdtemp(dir=work, prefix=f"{args.shape}_{args.variant}_"))
    argv = bench.train_args(args.shape, args.variant, 1, data, out, log_every=args.skip + args.steps)
    prof, wall = profile_train(args, argv, cuda)
    if args.trace:
        prof.export_chrome_trace(args.trace)
    micro, accum, _, _ = bench.parse_variant(args.variant)
    tokens = args.steps * micro * accum * train.load_config(argv).block_size
    rows = kernel_rows(prof, cuda)
    by_class, busy = defaultdict(float), sum(t for _, t, _ in rows) / 1e6
    for name, t, _ in rows:
        by_class[kernel_class(name)] += t / 1e6
    unit, per_step = ("GPU kernel" if cuda else "CPU operator self"), 1e3 / args.steps
    print(
        f"\n{args.shape} {args.variant}: {args.steps} steps profiled, {wall * per_step:.1f} ms/step, "
        f"{tokens / wall:,.0f} tok/s under the profiler; {unit} time {busy * per_step:.1f} ms/step "
        f"({busy / wall:.0%} of wall)\n"
    )
    print(f"| class | ms/step | share of {unit} time |\n|---|---|---|")
    for label, t in sorted(by_class.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {t * per_step:.2f} | {t / busy:.1%} |")
    if cuda and busy < wall:
        print(f"| (GPU idle: waiting on the host) | {(wall - busy) * per_step:.2f} | - |")
    print(f"\ntop {args.top} by time:\n| name | class | ms/step | calls/step |\n|---|---|---|---|")
    for name, t, count in sorted(rows, key=lambda r: -r[1])[: args.top]:
        print(f"| {name[:90]} | {kernel_class(name)} | {t / 1e6 * per_step:.2f} | {count / args.steps:.0f} |")


if __name__ == "__main__":
    main()
