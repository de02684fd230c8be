"""Train on token bins, one process or DDP, with Inheritune v2's growth loop.

    python train.py config/shakespeare_tiny.py --max_iters=200         # one device
    # DDP; the global batch stays the config's
    torchrun --nproc_per_node=3 train.py config/gpt2_large_inherit18.py

init_from: scratch | resume (out_dir/ckpt.pt) | inherit (the first n_layer blocks of `ref`, or
`inherit_layers`) | pretrained (`ref` as it is). With grow=True the run becomes the growth loop (paper,
Inheritune v2): inherit n_layer blocks from the reference, train for the full recipe, compare the val loss
with the reference's on the same fixed val windows; if worse, n_layer += grow_step and start again *from the
reference*.

Determinism: the windows of step s are drawn from a generator seeded by (seed, s) and split over ranks and
micro-steps, and torch's RNG is reseeded from (seed, rank, s) every step, so the step number is the whole data
position and RNG state: any world size sees the same batches, and on CPU a resumed run repeats the
uninterrupted one bit for bit (on GPUs up to the nondeterminism of some backward kernels)."""

import contextlib
import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from growth import growth_table, reference_curve, score, verdict
from inherit import inherit_layers
from inheritune.data import (
    EVAL_TOKENS,
    check_bins,
    fetch,
    open_split,
    read_meta,
    train_windows,
    val_loss,
    val_windows,
)
from inheritune.fp8 import check_fp8_device, convert_to_float8
from inheritune.runtime import Runtime, StopRequested, all_sum, any_rank, setup_runtime
from inheritune.util import (
    HUB_NAME,
    UserError,
    apply_config_args,
    atomic_write,
    check_can_create,
    check_settings,
    cli,
    plot_curves,
    read_log,
    resolve_hub_name,
)
from model import ARCHS, GPT, ModelConfig
from weights import load_model, open_weights, reference_tokenizer_hash, safe_torch_load, save_checkpoint


@dataclass
class TrainConfig:
    # where
    # checkpoint, log, plots; rerunning the same command continues the run there
    out_dir: str = "out"
    data_dir: str = "data/shakespeare"  # token bins written by prepare_owt.py
    # scratch | resume (out_dir's checkpoint) | inherit (from ref) | pretrained (ref)
    init_from: str = "scratch"
    # .pt, run or HF folder, .gguf or hub name; scratch: its shape at n_layer
    ref: str | None = None
    # explicit blocks for inherit (e.g. "0-5,30-35"); default: the first n_layer
    inherit_layers: str | None = None
    # model (scratch without ref builds this shape; inherit, grow and scratch with ref take only n_layer)
    arch: str = "gpt2"  # gpt2 | llama | mistral | qwen2 | qwen3 (all but gpt2 LLaMA-shaped)
    n_layer: int = 12  # transformer blocks (also the inherited depth)
    n_head: int = 12  # attention heads
    n_kv_head: int | None = None  # key/value heads (grouped-query attention); None: n_head
    head_dim: int | None = None  # per-head width; None: n_embd / n_head
    n_embd: int = 768  # model width
    intermediate_size: int | None = None  # MLP width; None: 4 x n_embd (gpt2), else ~8/3 x n_embd
    block_size: int = 1024  # training sequence length (an inherited model is cropped to it)
    bias: bool | None = None  # biases in linears and norms; None: True for gpt2, else False
    qkv_bias: bool | None = None  # biases on q, k, v only; None: True for qwen2
    qk_norm: bool | None = None  # RMSNorm on each head of q and k; None: True for qwen3
    tie_embeddings: bool | None = None  # head shares the token embedding; None: True for gpt2, else False
    rope_theta: float = 10000.0  # RoPE base (all but gpt2)
    # attend to the last sliding_window positions only (mistral); None: all
    sliding_window: int | None = None
    dropout: float = 0.0  # dropout probability
    # batch: batch_size sequences of block_size tokens per optimizer step, whatever the world size
    batch_size: int = 64  # sequences per optimizer step (global)
    # per process; grad accumulation = batch_size / (micro_batch_size * world)
    micro_batch_size: int = 8
    # AdamW + warmup + cosine
    max_iters: int = 1000  # optimizer steps
    learning_rate: float = 6e-4  # peak learning rate, after warmup
    min_lr: float = 6e-5  # learning rate at the end of the cosine decay
    warmup_iters: int = 100  # linear warmup steps
    lr_decay_iters: int | None = None  # step where the cosine reaches min_lr; None: max_iters
    weight_decay: float = 0.1  # AdamW weight decay on matrices and embeddings
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.95  # AdamW beta2
    grad_clip: float = 1.0  # gradient norm clip; 0 disables
    # evaluation, logging, checkpoints
    eval_interval: int = 100  # steps between val evaluations (also at the end)
    eval_tokens: int = EVAL_TOKENS  # fixed val budget: the same windows for every run, so runs compare
    log_interval: int = 10  # steps between train-loss log lines
    checkpoint_interval: int = 100  # steps between checkpoints (also at the end and on SIGTERM)
    seed: int = 1337  # data order, initialisation and dropout
    # system
    device: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
    # autocast dtype: auto (bfloat16 on cuda, float32 on cpu) | float32 | bfloat16
    dtype: str = "auto"
    compile: bool = False  # torch.compile the model
    # torch.compile mode: None (default), reduce-overhead, max-autotune, ...
    compile_mode: str | None = None
    # model: one graph; blocks: each block (one shared graph) + head and loss
    compile_scope: str = "model"
    attention: str = "auto"  # SDPA backend on CUDA: auto | flash | cudnn | efficient | math
    # the blocks' matmuls in float8 (fp8.py); GPUs of compute capability 8.9+
    fp8: bool = False
    peak_flops: float = 989e12  # per device, for MFU (H100/H200 dense bf16)
    # Inheritune v2 growth loop
    # run the growth loop: inherit n_layer, train, grow until the reference matches
    grow: bool = False
    grow_step: int = 2  # layers added per round
    grow_max_layer: int | None = None  # deepest round; None: the reference's depth
    # score: mean of the last k val losses (k=1 if the reference has no log)
    grow_last_k: int = 3
    grow_tolerance: float = 0.0  # a round matches when its score <= the reference's + tolerance
    grow_seeds: int = 1  # runs per round (seeds seed, seed+1, ...): decide on their mean


# -----------------------------------------------------------------------------------------------
# configuration

CHOICES = {
    "init_from": ("scratch", "resume", "inherit", "pretrained"),
    "arch": ARCHS,
    "compile_scope": ("model", "blocks"),
    "compile_mode": (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    "attention": ("auto", "flash", "cudnn", "efficient", "math"),
    "dtype": ("auto", "float32", "bfloat16"),
}  # the autocast dtype; weights stay float32
RANGES = {
    **dict.fromkeys(
        (
            "n_layer",
            "n_head",
            "n_kv_head",
            "head_dim",
            "sliding_window",
            "n_embd",
            "intermediate_size",
            "block_size",
            "batch_size",
            "micro_batch_size",
            "max_iters",
            "lr_decay_iters",
            "eval_interval",
            "eval_tokens",
            "log_interval",
            "checkpoint_interval",
            "grow_step",
            "grow_max_layer",
            "grow_last_k",
            "grow_seeds",
        ),
        "[1, inf)",
    ),
    **dict.fromkeys(
        ("learning_rate", "min_lr", "warmup_iters", "weight_decay", "grad_clip", "seed"), "[0, inf)"
    ),
    **dict.fromkeys(("beta1", "beta2", "dropout"), "[0, 1)"),
    **dict.fromkeys(("rope_theta", "peak_flops"), "(0, inf)"),
}
USAGE = """usage: python train.py [config.py ...] [--key=value ...]
       torchrun --nproc_per_node=N train.py [config.py ...] [--key=value ...]     (DDP)
Config files (Python assigning keys; base = "other.py" builds on another, resolved next to the file) and
--key=value overrides apply left to right onto these defaults:"""


def load_config(argv: list[str]) -> TrainConfig:
    """Config files (plain Python assigning keys) and --key=value overrides, applied left to right."""
    cfg = apply_config_args(TrainConfig(), argv, example="config/shakespeare_tiny.py", usage=USAGE)
    check_settings(cfg, CHOICES, RANGES)
    if cfg.fp8 and cfg.dtype == "float32":
        raise UserError("fp8=True trains under bfloat16 autocast; use dtype=bfloat16 or dtype=auto")
    if cfg.dtype == "float32" and cfg.attention in ("flash", "cudnn"):
        raise UserError(
            f"attention={cfg.attention} runs in 16-bit only; use dtype=bfloat16 or attention=auto"
        )
    if (cfg.init_from in ("inherit", "pretrained") or cfg.grow) and not cfg.ref:
        raise UserError(
            f"init_from={cfg.init_from}{' with grow' if cfg.grow else ''} needs ref=<reference checkpoint>"
        )
    return cfg


# ----------------------------------------------------------------------------------------------- model and
# optimizer

SHAPE_KEYS = [f.name for f in fields(ModelConfig) if f.name in TrainConfig.__dataclass_fields__]


def model_config(cfg: TrainConfig, vocab_size: int) -> ModelConfig:
    """The shape a from-scratch run trains (bench/throughput.py measures the same)."""
    return ModelConfig(vocab_size=vocab_size, **{k: getattr(cfg, k) for k in SHAPE_KEYS})


def build_model(cfg: TrainConfig, vocab_size: int, rt: Runtime) -> tuple[GPT, dict]:
    """The model for init_from, in float32 on the run's device; returns (model, metadata for the
    checkpoint)."""
    meta = {}
    if cfg.init_from == "scratch":  # the config's shape, or the reference's family and shape at n_layer depth
        shape = (
            model_config(cfg, vocab_size)
            if cfg.ref is None
            else replace(open_weights(cfg.ref).config, n_layer=cfg.n_layer, dropout=cfg.dropout)
        )
        torch.manual_seed(cfg.seed)
        model = GPT(shape)
    elif cfg.init_from == "inherit":
        model, provenance = inherit_layers(
            cfg.ref,
            n_layer=None if cfg.inherit_layers else cfg.n_layer,
            layers=cfg.inherit_layers,
            dtype=torch.float32,
        )
        meta["inherit"] = provenance
    else:  # pretrained
        model = load_model(cfg.ref, dtype=torch.float32)
    model.crop_block_size(cfg.block_size)
    return model.to(rt.device).train(), meta


RESUMABLE_CHANGES = {
    "out_dir",
    "init_from",
    "device",
    "dtype",
    "compile",
    "compile_mode",
    "compile_scope",
    "attention",
    "micro_batch_size",
    "log_interval",
    "eval_interval",
    "checkpoint_interval",
    "peak_flops",
}  # no effect on what is learned (beyond rounding)


def check_same_recipe(cfg: TrainConfig, saved: dict, what: str, may_change=RESUMABLE_CHANGES) -> None:
    """A run (or a growth loop) continues only with the recipe it began with: data, batch, schedule, seed,
    ..."""
    if changed := [
        f"{k}={getattr(cfg, k)!r} (was {v!r})"
        for k, v in saved.items()
        if k not in may_change and getattr(cfg, k, v) != v
    ]:
        raise UserError(
            f"{what} was made with other settings: {', '.join(changed)}; rerun it with its own settings "
            f"(its log.jsonl's first line), choose another out_dir, or delete it to start over"
        )


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings (>= 2-D) only; fused kernels on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda"
    )


def compile_model(model: GPT, scope: str, mode: str | None):
    """One graph, or (scope "blocks") each block and the head-plus-loss apart: identical blocks share one
    compiled graph, so compile time stays flat in depth, and DDP can all-reduce a block's gradients as its
    backward ends."""
    if scope == "model":
        return torch.compile(model, mode=mode, dynamic=False)
    for block in model.h:
        block.compile(mode=mode, dynamic=False)
    model.loss = torch.compile(model.loss, mode=mode, dynamic=False)
    return model


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to learning_rate, cosine decay to min_lr at lr_decay_iters, then min_lr."""
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    if step >= decay_iters:
        return cfg.min_lr
    progress = (step - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


# ----------------------------------------------------------------------------------------------- the training
# run


def write_log(path: Path, records: list[dict]) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in records)))


def train(cfg: TrainConfig, rt: Runtime, stop: StopRequested) -> list[dict]:
    """One training run from cfg.init_from to max_iters; returns its log records (every rank gets them)."""
    out = Path(cfg.out_dir)
    ckpt_path, log_path = out / "ckpt.pt", out / "log.jsonl"
    if cfg.init_from == "resume" and not ckpt_path.exists():
        raise UserError(
            f"init_from=resume but {ckpt_path} does not exist; start with init_from=scratch or inherit"
        )
    if cfg.batch_size % (cfg.micro_batch_size * rt.world):
        raise UserError(
            f"batch_size={cfg.batch_size} is not divisible by micro_batch_size={cfg.micro_batch_size} x "
            f"world size {rt.world}; change batch_size or micro_batch_size"
        )
    accum = cfg.batch_size // (cfg.micro_batch_size * rt.world)
    data_meta = read_meta(cfg.data_dir)
    n_train = len(open_split(cfg.data_dir, "train", data_meta))
    if n_train <= cfg.block_size + 1:
        raise UserError(f"train.bin has {n_train} tokens, fewer than one block of {cfg.block_size}")
    # fail early
    val_windows(len(open_split(cfg.data_dir, "val", data_meta)), cfg.block_size, cfg.eval_tokens)

    start, pending_loss, records, extra, began_as = 0, torch.zeros(()), [], {}, cfg
    if cfg.init_from == "resume":
        ckpt = safe_torch_load(ckpt_path)
        if not {"config", "model", "optimizer", "step", "train_config", "data"} <= set(ckpt):
            raise UserError(
                f"{ckpt_path} is not a train.py checkpoint (no optimizer/step); start a new run from it "
                f"with init_from=pretrained ref={ckpt_path}"
            )
        check_same_recipe(cfg, ckpt["train_config"], ckpt_path)
        # how the run started, for its records
        began_as = replace(cfg, init_from=ckpt["train_config"]["init_from"])
        model = GPT(ModelConfig.from_dict(ckpt["config"]))
        model.load_state_dict(ckpt["model"])
        model.to(rt.device).train()
        start, pending_loss = ckpt["step"], ckpt["pending_loss"]
        if start > cfg.max_iters:
            raise UserError(f"{ckpt_path} is at step {start}, past max_iters={cfg.max_iters}")
        expected_hash = ckpt["data"]["meta"]["tokenizer"]["hash"]  # resume on the tokenization it began with
        extra = {k: ckpt[k] for k in ("inherit",) if k in ckpt}
        # the log as it was at the checkpoint: the steps after it are about to be redone identically
        records = [
            r for r in read_log(log_path)[1:] if r["step"] < start or (r["step"] == start and "lr" in r)
        ]
    else:
        model, extra = build_model(cfg, data_meta["vocab_size"], rt)
        expected_hash = None if cfg.ref is None else reference_tokenizer_hash(cfg.ref)
    check_bins(cfg.data_dir, model.config.vocab_size, expected_hash)
    optimizer = make_optimizer(model, cfg, rt.device)
    if cfg.init_from == "resume":
        optimizer.load_state_dict(ckpt["optimizer"])
        del ckpt
    raw, flops_per_token = model, model.flops_per_token(cfg.block_size)
    window = raw.config.sliding_window
    if cfg.attention in ("flash", "cudnn") and window is not None and cfg.block_size > window:
        raise UserError(
            f"block_size={cfg.block_size} exceeds the model's sliding window of {window}, which needs an "
            f"explicit mask that attention={cfg.attention} does not take; use attention=auto"
        )
    # otherwise "Invalid backend" in the middle of compiling
    if cfg.attention == "cudnn" and raw.config.head_dim % 8:
        raise UserError(
            f"attention=cudnn needs a head dimension divisible by 8; this model's is "
            f"{raw.config.head_dim}: use attention=auto"
        )
    if cfg.fp8:
        # the same parameters: checkpoints stay plain
        convert_to_float8(raw, cfg.micro_batch_size * cfg.block_size)
    if cfg.compile:
        torch._dynamo.reset()  # each run (growth round) compiles afresh instead of piling up cached graphs
        model = compile_model(model, cfg.compile_scope, cfg.compile_mode)
    eval_model = model  # evaluation needs no gradient sync: never through the DDP wrapper
    if rt.world > 1:  # compile, then DDP, as nanoGPT: dynamo's DDP optimizer still splits the graph at DDP's
        # bucket boundaries, so the all-reduce overlaps the backward (seen on 3 H200s: 95% scaling)
        model = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
            gradient_as_bucket_view=True,
        )
    # the resolved config, for people (train_config.json, the log's first line): the shape keys say what was
    # trained, also when the model came from a reference or a checkpoint rather than from those keys
    header = {"config": asdict(replace(began_as, **{k: getattr(raw.config, k) for k in SHAPE_KEYS}))}
    if rt.master:
        # a save cut short by SIGKILL, as large as a checkpoint
        for stale in out.glob(f".{ckpt_path.name}.*.tmp"):
            stale.unlink()
        atomic_write(
            out / "train_config.json",
            lambda tmp: Path(tmp).write_text(json.dumps(header["config"], indent=2)),
        )
        write_log(log_path, [header] + records)
        print(json.dumps(header["config"]), flush=True)
        print(
            f"[{out}] {cfg.init_from}: {raw.config.arch} {raw.config.n_layer} layers, "
            f"{raw.num_params() / 1e6:.2f}M "
            f"params; {cfg.batch_size} x {cfg.block_size} tokens/step = {rt.world} ranks x "
            f"{cfg.micro_batch_size} "
            f"x {accum} accumulation; steps {start} -> {cfg.max_iters}",
            flush=True,
        )

    def checkpoint(step):
        # every rank resumes with the ranks' mean of the pending loss
        rank_mean_loss = check_finite(step) / rt.world
        if rt.master:
            save_checkpoint(
                ckpt_path,
                raw,
                optimizer=optimizer.state_dict(),
                step=step,
                pending_loss=torch.tensor(rank_mean_loss, dtype=pending_loss.dtype),
                tokens_seen=step * cfg.batch_size * cfg.block_size,
                train_config=asdict(began_as),
                data={"dir": cfg.data_dir, "meta": data_meta},
                **extra,
            )
            write_log(log_path, [header] + records)

    # stop on a NaN/inf loss or gradient before a good checkpoint is overwritten;
    def check_finite(step) -> float:
        # returns the pending train loss summed over ranks
        loss, bad_grads = all_sum(rt, pending_loss.item(), nonfinite_grads.item())
        if not math.isfinite(loss) or bad_grads:
            raise UserError(
                f"train loss {loss / rt.world:.4g} with {bad_grads:.0f} non-finite gradient norm(s) before "
                f"step {step}: stopping; {last_good()} (lower learning_rate or check the data)"
            )
        return loss

    # the checkpoint on disk is this run's: a rerun into a used out_dir resumes or is refused
    def last_good() -> str:
        return (
            f"the last good checkpoint is {ckpt_path}"
            if ckpt_path.exists()
            else "no checkpoint was saved yet"
        )

    def log(record, message):
        records.append(record)
        if rt.master:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(message, flush=True)

    step, t_last = start, time.time()
    reset_peak_memory = torch.cuda.reset_peak_memory_stats if rt.device.type == "cuda" else lambda *_: None
    reset_peak_memory(rt.device)
    pending_loss, nonfinite_grads = pending_loss.to(rt.device), torch.zeros((), device=rt.device)
    while True:
        saved = step > start and (step % cfg.checkpoint_interval == 0 or step == cfg.max_iters)
        if saved:
            checkpoint(step)
        if any_rank(rt, stop.flag):  # before the eval: SIGKILL follows SIGTERM within seconds
            if not saved:
                checkpoint(step)
            if rt.master:
                print(
                    f"SIGTERM: checkpoint at step {step} in {ckpt_path}; resume with init_from=resume",
                    flush=True,
                )
            sys.exit(143)
        if step % cfg.eval_interval == 0 or step == cfg.max_iters:
            loss = val_loss(
                eval_model,
                cfg.data_dir,
                cfg.block_size,
                cfg.eval_tokens,
                cfg.micro_batch_size,
                rt.autocast,
                rt.rank,
                rt.world,
            )
            if not math.isfinite(loss):
                raise UserError(f"val loss is {loss} at step {step}: stopping; {last_good()}")
            log(
                {"step": step, "tokens": step * cfg.batch_size * cfg.block_size, "val_loss": loss},
                f"step {step}: val loss {loss:.4f}",
            )
            reset_peak_memory(rt.device)
        if step >= cfg.max_iters:
            break

        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, rt.rank, step]).generate_state(1)[0]))
        windows = train_windows(cfg.seed, step, n_train, cfg.block_size, cfg.batch_size)
        for micro, starts in enumerate(windows.reshape(rt.world, accum, cfg.micro_batch_size)[rt.rank]):
            x, y = fetch(cfg.data_dir, "train", starts, cfg.block_size, rt.device, data_meta)
            sync = micro == accum - 1 or rt.world == 1  # all-reduce gradients once, on the last micro-step
            with contextlib.nullcontext() if sync else model.no_sync(), rt.autocast:
                loss = model(x, y)
                (loss / accum).backward()
            pending_loss += loss.detach() / accum
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        )
        nonfinite_grads += ~torch.isfinite(grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step % cfg.log_interval == 0 or step == cfg.max_iters:
            n_steps = step - (step - 1) // cfg.log_interval * cfg.log_interval  # steps since the last record
            train_loss = check_finite(step) / rt.world / n_steps
            dt = time.time() - t_last
            tok_s = min(n_steps, step - start) * cfg.batch_size * cfg.block_size / dt
            mfu = tok_s * flops_per_token / (cfg.peak_flops * rt.world)
            record = {
                "step": step,
                "tokens": step * cfg.batch_size * cfg.block_size,
                "lr": lr,
                "train_loss": train_loss,
                "tok_per_s": round(tok_s, 1),
                "mfu": round(mfu, 5),
            }
            if rt.device.type == "cuda":  # the training steps' peak: reset at the start and after each eval
                record["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(rt.device) / 2**30, 2)
            log(record, f"step {step}: loss {train_loss:.4f}, lr {lr:.2e}, {tok_s:,.0f} tok/s, MFU {mfu:.1%}")
            t_last, pending_loss = time.time(), torch.zeros((), device=rt.device)
    if rt.master:
        plot_curves({str(out): records}, out / "loss.png")
    return records


# ----------------------------------------------------------------------------------------------- growth loop


def reference_val_loss(cfg: TrainConfig, rt: Runtime) -> float:
    """The reference's val loss on the same fixed windows as every round (when its own log cannot say)."""
    model = load_model(cfg.ref, device=rt.device)
    check_bins(cfg.data_dir, model.config.vocab_size, reference_tokenizer_hash(cfg.ref))
    model.crop_block_size(cfg.block_size)
    return val_loss(
        model,
        cfg.data_dir,
        cfg.block_size,
        cfg.eval_tokens,
        cfg.micro_batch_size,
        rt.autocast,
        rt.rank,
        rt.world,
    )


def grow(cfg: TrainConfig, rt: Runtime, stop: StopRequested) -> dict:
    """Inheritune v2: rounds of inherit-n-layers-from-the-reference + full training (grow_seeds runs each), n
    += grow_step until a round's score matches the reference's by growth.py's verdict. Resumable at any
    point."""
    out = Path(cfg.out_dir)
    state_path = out / "growth.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"rounds": []}
    ref_depth = open_weights(cfg.ref).config.n_layer
    max_layer = min(cfg.grow_max_layer or ref_depth, ref_depth)
    if not 1 <= cfg.n_layer <= max_layer:
        raise UserError(
            f"n_layer={cfg.n_layer} is outside 1..{max_layer} (the reference has {ref_depth} layers)"
        )
    if cfg.inherit_layers:
        raise UserError("grow=True inherits the first n_layer blocks each round; unset inherit_layers")
    # rounds and the target mean something under one
    check_same_recipe(cfg, state.get("recipe", {}), state_path)
    if state["rounds"] and "reference_score" not in state:
        raise UserError(
            f"{state_path} was written by an earlier growth loop (another verdict); continue it with that "
            f"version, or choose another out_dir"
        )
    if "reference_score" not in state:
        curve, differences, why = reference_curve(cfg.ref, asdict(cfg), read_meta(cfg.data_dir))
        last_k = min(cfg.grow_last_k, len(curve)) if curve else 1
        state.update(
            recipe={k: v for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES},
            reference=cfg.ref,
            reference_layers=ref_depth,
            statistic="mean of the last k val losses" if curve else "final val loss",
            k=last_k,
            why=why,
            recipe_differences=differences,
            reference_val_curve=curve,
            reference_score=score(curve, last_k) if curve else reference_val_loss(cfg, rt),
        )

    def save_state():
        if rt.master:
            atomic_write(state_path, lambda tmp: Path(tmp).write_text(json.dumps(state, indent=2)))

    save_state()
    if rt.master:
        print(
            f"growth loop: reference {cfg.ref} ({ref_depth} layers), {state['statistic']} (k={state['k']}) "
            f"{state['reference_score']:.4f}, because {state['why']}",
            flush=True,
        )
    rounds = state["rounds"]
    n_layer = rounds[-1]["n_layer"] + cfg.grow_step if rounds else cfg.n_layer
    while not (rounds and rounds[-1]["matches"]) and n_layer <= max_layer:
        round_dir, runs = out / f"round{len(rounds) + 1}_{n_layer}L", []
        for seed in range(cfg.seed, cfg.seed + cfg.grow_seeds):
            run_dir = round_dir if cfg.grow_seeds == 1 else round_dir / f"seed{seed}"
            run_cfg = replace(
                cfg,
                out_dir=str(run_dir),
                n_layer=n_layer,
                seed=seed,
                grow=False,
                inherit_layers=None,
                init_from="resume" if (run_dir / "ckpt.pt").exists() else "inherit",
            )  # from the reference
            curve = [[r["step"], r["val_loss"]] for r in train(run_cfg, rt, stop) if "val_loss" in r]
            runs.append(
                {
                    "seed": seed,
                    "dir": str(run_dir),
                    "final_val_loss": curve[-1][1],
                    "score": score(curve, state["k"]),
                    "val_curve": curve,
                }
            )
        rounds.append(
            {
                "round": len(rounds) + 1,
                "n_layer": n_layer,
                "steps": cfg.max_iters,
                "runs": runs,
                **verdict([run["score"] for run in runs], state["reference_score"], cfg.grow_tolerance),
            }
        )
        save_state()
        n_layer = max_layer if n_layer < max_layer < n_layer + cfg.grow_step else n_layer + cfg.grow_step
    if rt.master:
        print(growth_table(state, cfg.grow_tolerance))
        curves = {
            f"{r['n_layer']} layers" + (f", seed {run['seed']}" if len(r["runs"]) > 1 else ""): run[
                "val_curve"
            ]
            for r in rounds
            for run in r["runs"]
        }
        plot_curves(
            {
                **({"reference": state["reference_val_curve"]} if state["reference_val_curve"] else {}),
                **curves,
            },
            out / "growth.png",
            reference=state["reference_score"],
        )
    return state


def continue_or_refuse(cfg: TrainConfig, rt: Runtime) -> TrainConfig:
    """Rerunning a command never destroys work: when out_dir already holds a checkpoint, the same command (a
    rerun, a requeued job, a torchrun restart) continues that run, and any other command is refused."""
    path = Path(cfg.out_dir) / "ckpt.pt"
    if cfg.grow or cfg.init_from == "resume" or not path.exists():
        return cfg  # the growth loop continues its rounds itself
    ckpt = safe_torch_load(path)
    saved = ckpt.get("train_config") if isinstance(ckpt, dict) else None
    if saved is None:
        raise UserError(f"{path} exists and is not a train.py run's checkpoint; choose another out_dir")
    check_same_recipe(cfg, saved, f"{path} (a run at step {ckpt['step']})", RESUMABLE_CHANGES - {"init_from"})
    if rt.master:
        print(f"{path} holds this command's run at step {ckpt['step']}: continuing it", flush=True)
    return replace(cfg, init_from="resume")


def check_reference_exists(ref: str | None) -> None:
    """A missing reference is usually one not trained yet: name the shipped config that writes it. A hub name
    is fetched into the HF cache now, before anything is built."""
    if ref is None or Path(ref).exists():
        return
    run_dir = str(Path(ref).parent if Path(ref).suffix == ".pt" else Path(ref))
    writes = [
        c.name
        for c in sorted((Path(__file__).parent / "config").glob("*.py"))
        if re.search(rf"^out_dir\s*=\s*[\"']{re.escape(run_dir)}[\"']", c.read_text(), re.M)
    ]
    if not writes and HUB_NAME.fullmatch(ref) and not Path(ref).parent.exists():
        resolve_hub_name(ref)
        return
    how = f" (torchrun --nproc_per_node=N train.py config/{writes[0]} writes it)" if writes else ""
    raise UserError(
        f"reference ref={ref} does not exist: train it first{how}, or set ref to a HF model folder "
        f"(e.g. GPT-2's), its hub name or a .gguf file"
    )


def main(argv=None):
    cfg = load_config(sys.argv[1:] if argv is None else argv)
    check_can_create(cfg.out_dir)
    check_reference_exists(cfg.ref)
    rt = setup_runtime(cfg.device, cfg.dtype, cfg.attention)
    if cfg.fp8:
        check_fp8_device(rt.device)
    cfg = continue_or_refuse(cfg, rt)
    stop = StopRequested()
    try:
        grow(cfg, rt, stop) if cfg.grow else train(cfg, rt, stop)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    cli(main)
