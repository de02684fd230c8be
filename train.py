"""Train on token bins, one process or DDP; with grow=True, Inheritune v2's growth loop (growth.py).

    python train.py config/shakespeare_tiny.py --max_iters=200          # one device
    torchrun --nproc_per_node=3 train.py config/gpt2_large_inherit18.py  # DDP: the same global batch

A run reads as train() from top to bottom: the bins (inheritune/data.py), a new model for init_from (scratch;
inherit: the first n_layer blocks of `ref`; pretrained: `ref` as it is) or the run's own checkpoint (resume),
then Run.steps(): checkpoint, evaluate, train one step, log, until max_iters.

Determinism: the windows of step s are drawn from a generator seeded by (seed, s) and split over ranks and
micro-steps, and torch's RNG is reseeded from (seed, rank, s) every step, so the step number is the whole data
position and RNG state: any world size sees the same batches, and on CPU a resumed run repeats the
uninterrupted one bit for bit (on GPUs up to the nondeterminism of some backward kernels).
"""

import contextlib
import json
import math
import os
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.distributed as dist

from growth import grow
from inherit import inherit_layers, select_layers
from inheritune.data import (
    EVAL_TOKENS,
    check_bins,
    check_same_bins,
    fetch,
    open_for_training,
    train_windows,
    val_loss,
)
from inheritune.fp8 import check_fp8_device, convert_to_float8
from inheritune.runs import RunLock, append_log, check_same_recipe, continue_or_refuse, read_log, write_log
from inheritune.runtime import Runtime, StopRequested, all_sum, any_rank, setup_runtime
from inheritune.tensor_files import safe_torch_load
from inheritune.util import (
    HUB_NAME,
    UserError,
    apply_config_args,
    atomic_write,
    check_can_create,
    check_settings,
    cli,
    plot_curves,
    resolve_hub_name,
    setting,
)
from model import ARCHS, GPT, ModelConfig
from weights import Weights, load_model, open_weights, save_checkpoint

# ------------------------------------------------------------------------------------------- configuration

INIT_FROM = ("scratch", "resume", "inherit", "pretrained")
ATTENTION = ("auto", "flash", "cudnn", "efficient", "math")
DTYPES, SCOPES = ("auto", "float32", "bfloat16"), ("model", "blocks")
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TrainConfig:
    # where
    out_dir: str = setting("out", "checkpoint, log, plots; the same command again continues the run")
    data_dir: str = setting("data/shakespeare", "token bins written by prepare_owt.py")
    init_from: str = setting(
        "scratch", "resume: out_dir's run; inherit: from ref; pretrained: ref", choices=INIT_FROM
    )
    ref: str | None = setting(None, ".pt, run or HF folder, .gguf or hub name; scratch: its shape at n_layer")
    inherit_layers: str | None = setting(None, 'blocks to inherit, e.g. "0-5,30-35"; None: the first n_layer')
    # model
    arch: str = setting("gpt2", "model family (all but gpt2 are LLaMA-shaped)", choices=ARCHS)
    n_layer: int = setting(12, "transformer blocks (also the inherited depth)", at_least=1)
    n_head: int = setting(12, "attention heads", at_least=1)
    n_kv_head: int | None = setting(None, "key/value heads (grouped-query); None: n_head", at_least=1)
    head_dim: int | None = setting(None, "per-head width; None: n_embd / n_head", at_least=1)
    n_embd: int = setting(768, "model width", at_least=1)
    intermediate_size: int | None = setting(None, "MLP width; None: 4 x (8/3 x) n_embd", at_least=1)
    block_size: int = setting(1024, "sequence length (an inherited model is cropped to it)", at_least=1)
    bias: bool | None = setting(None, "biases in linears and norms; None: True for gpt2 only")
    qkv_bias: bool | None = setting(None, "biases on q, k, v only; None: True for qwen2")
    qk_norm: bool | None = setting(None, "RMSNorm on each head of q and k; None: True for qwen3")
    tie_embeddings: bool | None = setting(None, "head shares the token embedding; None: True for gpt2")
    rope_theta: float = setting(10000.0, "RoPE base (all but gpt2)", above=0)
    sliding_window: int | None = setting(None, "attend to the last N positions; None: all", at_least=1)
    dropout: float = setting(0.0, "dropout probability", at_least=0, below=1)
    # batch
    batch_size: int = setting(64, "sequences per optimizer step, whatever the world size", at_least=1)
    micro_batch_size: int = setting(8, "per process; accumulation: batch / (micro x world)", at_least=1)
    # optimizer and schedule
    max_iters: int = setting(1000, "optimizer steps", at_least=1)
    learning_rate: float = setting(6e-4, "peak learning rate, after warmup", at_least=0)
    min_lr: float = setting(6e-5, "learning rate at the end of the cosine decay", at_least=0)
    warmup_iters: int = setting(100, "linear warmup steps", at_least=0)
    lr_decay_iters: int | None = setting(None, "where the cosine reaches min_lr; None: max_iters", at_least=1)
    weight_decay: float = setting(0.1, "AdamW weight decay on matrices and embeddings", at_least=0)
    beta1: float = setting(0.9, "AdamW beta1", at_least=0, below=1)
    beta2: float = setting(0.95, "AdamW beta2", at_least=0, below=1)
    grad_clip: float = setting(1.0, "gradient norm clip; 0 disables", at_least=0)
    # evaluation, logging, checkpoints
    eval_interval: int = setting(100, "steps between val evaluations (also at the end)", at_least=1)
    eval_tokens: int = setting(EVAL_TOKENS, "fixed val budget: the same windows for every run", at_least=1)
    log_interval: int = setting(10, "steps between train-loss log lines", at_least=1)
    checkpoint_interval: int = setting(100, "steps between checkpoints (also at the end)", at_least=1)
    seed: int = setting(1337, "data order, initialisation and dropout", at_least=0)
    # system
    device: str = setting("auto", "auto (cuda if there is one, else cpu), cpu, cuda or cuda:N")
    dtype: str = setting("auto", "autocast dtype; auto: bfloat16 on cuda, float32 on cpu", choices=DTYPES)
    compile: bool = setting(False, "torch.compile the model")
    compile_mode: str | None = setting(None, "torch.compile's mode", choices=COMPILE_MODES)
    compile_scope: str = setting("model", "model: one graph; blocks: each block apart", choices=SCOPES)
    attention: str = setting("auto", "SDPA backend on CUDA", choices=ATTENTION)
    fp8: bool = setting(False, "the blocks' matmuls in float8 (inheritune/fp8.py); compute capability 8.9+")
    peak_flops: float = setting(989e12, "per device, for MFU (H100/H200 dense bf16)", above=0)
    # the growth loop
    grow: bool = setting(False, "the growth loop: inherit n_layer, train, grow until the reference matches")
    grow_step: int = setting(2, "layers added per round", at_least=1)
    grow_max_layer: int | None = setting(None, "deepest round; None: the reference's depth", at_least=1)
    grow_last_k: int = setting(3, "score: mean of the last k val losses (or the final one)", at_least=1)
    grow_tolerance: float = setting(0.0, "a round matches when its score <= the reference's + tolerance")
    grow_seeds: int = setting(1, "runs per round (seed, seed+1, ...): decide on their mean", at_least=1)

    SECTIONS: ClassVar[dict] = {  # --help's titles, by the first key of each group
        "out_dir": "where",
        "arch": "model (a scratch run without ref builds this shape; the other runs take only n_layer)",
        "batch_size": "batch: batch_size sequences of block_size tokens per optimizer step",
        "max_iters": "AdamW, linear warmup, cosine decay",
        "eval_interval": "evaluation, logging, checkpoints",
        "device": "system",
        "grow": "Inheritune v2 growth loop",
    }


USAGE = """usage: python train.py [config.py ...] [--key=value ...]
       torchrun --nproc_per_node=N train.py [config.py ...] [--key=value ...]     (DDP)
Config files (Python assigning keys; base = "other.py" builds on another, resolved next to the file) and
--key=value overrides apply left to right onto these defaults:"""


def load_config(argv: list[str]) -> TrainConfig:
    """Config files (plain Python assigning keys) and --key=value overrides, left to right, then checked."""
    cfg = apply_config_args(TrainConfig(), argv, example="config/shakespeare_tiny.py", usage=USAGE)
    check_config(cfg, world=int(os.environ.get("WORLD_SIZE", "1")))
    return cfg


def check_config(cfg: TrainConfig, world: int) -> None:
    """Every key in its range, and the keys that depend on each other (and on the world size) agree."""
    check_settings(cfg)
    if cfg.fp8 and cfg.dtype == "float32":
        raise UserError("fp8=True trains under bfloat16 autocast; use dtype=bfloat16 or dtype=auto")
    if cfg.dtype == "float32" and cfg.attention in ("flash", "cudnn"):
        raise UserError(
            f"attention={cfg.attention} runs in 16-bit only; use dtype=bfloat16 or attention=auto"
        )
    if (cfg.init_from in ("inherit", "pretrained") or cfg.grow) and not cfg.ref:
        with_grow = " with grow" if cfg.grow else ""
        raise UserError(f"init_from={cfg.init_from}{with_grow} needs ref=<reference checkpoint>")
    if cfg.grow and cfg.inherit_layers:
        raise UserError("grow=True inherits the first n_layer blocks each round; unset inherit_layers")
    if cfg.grow and cfg.init_from not in ("scratch", "inherit"):
        raise UserError(
            f"grow=True inherits every round from ref, so init_from={cfg.init_from} has no effect: drop it"
        )
    for key in ("out_dir", "data_dir"):
        if not getattr(cfg, key).strip():
            example = TrainConfig.__dataclass_fields__[key].default
            raise UserError(f"{key} is empty; name a folder, e.g. {key}={example}")
    if cfg.warmup_iters > cfg.max_iters:
        raise UserError(
            f"warmup_iters={cfg.warmup_iters} is longer than the run (max_iters={cfg.max_iters}): the "
            f"learning rate would never reach its peak; lower warmup_iters"
        )
    if cfg.batch_size % (cfg.micro_batch_size * world):
        raise UserError(
            f"batch_size={cfg.batch_size} is not divisible by micro_batch_size={cfg.micro_batch_size} x "
            f"world size {world}; change batch_size or micro_batch_size"
        )


def check_attention(cfg: TrainConfig, model: ModelConfig) -> None:
    """The SDPA kernel asked for can run this model (checked once the model's shape is known)."""
    window = model.sliding_window
    if cfg.attention in ("flash", "cudnn") and window is not None and cfg.block_size > window:
        raise UserError(
            f"block_size={cfg.block_size} exceeds the model's sliding window of {window}, which needs an "
            f"explicit mask that attention={cfg.attention} does not take; use attention=auto"
        )
    if cfg.attention == "cudnn" and model.head_dim % 8:  # else "Invalid backend" in the middle of compiling
        raise UserError(
            f"attention=cudnn needs a head dimension divisible by 8; this model's is {model.head_dim}: "
            f"use attention=auto"
        )


# ------------------------------------------------------------------------------------- model and optimizer

SHAPE_KEYS = [f.name for f in fields(ModelConfig) if f.name in TrainConfig.__dataclass_fields__]


def model_config(cfg: TrainConfig, vocab_size: int) -> ModelConfig:
    """The shape a from-scratch run trains (bench/throughput.py measures the same)."""
    return ModelConfig(vocab_size=vocab_size, **{k: getattr(cfg, k) for k in SHAPE_KEYS})


def build_model(
    cfg: TrainConfig, vocab_size: int, rt: Runtime, reference: Weights | None
) -> tuple[GPT, dict]:
    """The model for init_from, in float32 on the run's device, and what its checkpoint records of it."""
    meta = {}
    if cfg.init_from == "scratch":  # the config's shape, or the reference's family and shape at n_layer depth
        if reference is None:
            shape = model_config(cfg, vocab_size)
        else:
            shape = replace(reference.config, n_layer=cfg.n_layer, dropout=cfg.dropout)
        torch.manual_seed(cfg.seed)
        model = GPT(shape)
    elif cfg.init_from == "inherit":
        depth = reference.config.n_layer
        layers = (
            select_layers(depth, layers=cfg.inherit_layers, flag="inherit_layers=")
            if cfg.inherit_layers
            else None
        )
        n_layer = None if layers else cfg.n_layer
        model, provenance = inherit_layers(reference, n_layer, layers, dtype=torch.float32)
        meta["inherit"] = provenance
    else:  # pretrained
        model = load_model(reference, dtype=torch.float32)
    model.crop_block_size(cfg.block_size)
    return model.to(rt.device).train(), meta


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings (>= 2-D) only; fused kernels on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    betas = (cfg.beta1, cfg.beta2)
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=betas, fused=device.type == "cuda")


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


def prepare_for_training(model: GPT, cfg: TrainConfig, rt: Runtime):
    """(the model as the steps run it: float8 matmuls, compiled, wrapped in DDP, as the config asks; the model
    as evaluation runs it, never through DDP, which would sync gradients). Both share model's parameters."""
    if cfg.fp8:
        convert_to_float8(model, cfg.micro_batch_size * cfg.block_size)  # same parameters: plain checkpoints
    if cfg.compile:
        torch._dynamo.reset()  # each run (growth round) compiles afresh instead of piling up cached graphs
        model = compile_model(model, cfg.compile_scope, cfg.compile_mode)
    eval_model = model
    if rt.world > 1:  # compile, then DDP, as nanoGPT: dynamo's DDP optimizer still splits the graph at DDP's
        # bucket boundaries, so the all-reduce overlaps the backward
        device_ids = [rt.device.index] if rt.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=device_ids, gradient_as_bucket_view=True
        )
    return model, eval_model


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to learning_rate, cosine decay to min_lr at lr_decay_iters, then min_lr."""
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    if step >= decay_iters:
        return cfg.min_lr
    progress = (step - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


# ---------------------------------------------------------------------------------------- the training run


@dataclass
class RunState:
    """Where a run stands before its next step: new at step 0, or read back from its checkpoint."""

    model: GPT
    optimizer: torch.optim.AdamW
    began_as: TrainConfig  # the config as the run began (its first init_from), for its records
    step: int = 0
    pending_loss: torch.Tensor = field(default_factory=lambda: torch.zeros(()))  # since the last log record
    records: list = field(default_factory=list)  # the log so far
    extra: dict = field(default_factory=dict)  # what the checkpoint carries besides (inherit's provenance)


def new_run(cfg: TrainConfig, rt: Runtime, vocab_size: int, reference: Weights | None) -> RunState:
    """A run at step 0: the model for init_from, checked against the bins, and a fresh optimizer."""
    model, extra = build_model(cfg, vocab_size, rt, reference)
    check_bins(cfg.data_dir, model.config.vocab_size, None if reference is None else reference.tokenizer_hash)
    return RunState(model, make_optimizer(model, cfg, rt.device), began_as=cfg, extra=extra)


def resumed_run(cfg: TrainConfig, rt: Runtime) -> RunState:
    """The run in out_dir, as its checkpoint left it: model, optimizer, step, pending loss and log."""
    path = Path(cfg.out_dir) / "ckpt.pt"
    ckpt = safe_torch_load(path)
    if not {"config", "model", "optimizer", "step", "train_config", "data"} <= set(ckpt):
        raise UserError(
            f"{path} is not a train.py checkpoint (no optimizer/step); start a new run from it with "
            f"init_from=pretrained ref={path}"
        )
    check_same_recipe(cfg, ckpt["train_config"], path)
    check_same_bins(cfg.data_dir, ckpt["data"]["meta"], path)
    model = GPT(ModelConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    model.to(rt.device).train()
    step = ckpt["step"]
    if step > cfg.max_iters:
        raise UserError(f"{path} is at step {step}, past max_iters={cfg.max_iters}")
    began_with = ckpt["data"]["meta"]["tokenizer"]["hash"]  # a run resumes on the tokenization it began with
    check_bins(cfg.data_dir, model.config.vocab_size, began_with)
    optimizer = make_optimizer(model, cfg, rt.device)
    optimizer.load_state_dict(ckpt["optimizer"])
    # the log as it was at the checkpoint: the steps after it are about to be redone identically
    log = read_log(Path(cfg.out_dir) / "log.jsonl")[1:]
    records = [r for r in log if r["step"] < step or (r["step"] == step and "lr" in r)]
    began_as = replace(cfg, init_from=ckpt["train_config"]["init_from"])
    extra = {k: ckpt[k] for k in ("inherit",) if k in ckpt}
    return RunState(model, optimizer, began_as, step, ckpt["pending_loss"], records, extra)


def train(cfg: TrainConfig, rt: Runtime, stop: StopRequested, reference: Weights | None = None) -> list[dict]:
    """One training run from cfg.init_from to max_iters; returns its log records (every rank gets them).
    reference: the opened `ref`, which a new run starts from."""
    meta, n_train = open_for_training(cfg.data_dir, cfg.block_size, cfg.eval_tokens)
    if cfg.init_from == "resume":
        state = resumed_run(cfg, rt)
    else:
        state = new_run(cfg, rt, meta["vocab_size"], reference)
    check_attention(cfg, state.model.config)
    run = Run(cfg, rt, state, meta, n_train)
    run.begin()
    run.steps(stop)
    if rt.master:
        plot_curves({str(run.out): run.records}, run.out / "loss.png")
    return run.records


class Run:
    """A training run's moving parts: the model as trained and as evaluated, its optimizer, the log records,
    the checkpoint, and the train loss pending since the last log record."""

    def __init__(self, cfg: TrainConfig, rt: Runtime, state: RunState, data_meta: dict, n_train: int):
        self.cfg, self.rt, self.data_meta, self.n_train = cfg, rt, data_meta, n_train
        self.raw, self.optimizer, self.start = state.model, state.optimizer, state.step
        self.records, self.extra, self.began_as = state.records, state.extra, state.began_as
        self.flops_per_token = self.raw.flops_per_token(cfg.block_size)
        self.vocab = self.raw.config.vocab_size
        self.model, self.eval_model = prepare_for_training(self.raw, cfg, rt)
        self.accum = cfg.batch_size // (cfg.micro_batch_size * rt.world)
        self.out = Path(cfg.out_dir)
        self.ckpt_path, self.log_path = self.out / "ckpt.pt", self.out / "log.jsonl"
        self.pending_loss = state.pending_loss.to(rt.device)
        self.nonfinite_grads = torch.zeros((), device=rt.device)
        # the resolved config, for people (train_config.json, the log's first line): the shape keys say what
        # was trained, also when the model came from a reference or a checkpoint rather than from those keys
        shape = {k: getattr(self.raw.config, k) for k in SHAPE_KEYS}
        self.header = {"config": asdict(replace(self.began_as, **shape))}

    def begin(self) -> None:
        """Write what the run is (train_config.json, the log so far) and say it."""
        cfg, rt, raw = self.cfg, self.rt, self.raw
        if not rt.master:
            return
        for stale in self.out.glob(f".{self.ckpt_path.name}.*.tmp"):  # a save cut short by SIGKILL
            stale.unlink()
        config = json.dumps(self.header["config"], indent=2)
        atomic_write(self.out / "train_config.json", lambda tmp: Path(tmp).write_text(config))
        write_log(self.log_path, [self.header] + self.records)
        print(json.dumps(self.header["config"]), flush=True)
        print(
            f"[{self.out}] {cfg.init_from}: {raw.config.arch} {raw.config.n_layer} layers, "
            f"{raw.num_params() / 1e6:.2f}M params; {cfg.batch_size} x {cfg.block_size} tokens/step = "
            f"{rt.world} ranks x {cfg.micro_batch_size} x {self.accum} accumulation; "
            f"steps {self.start} -> {cfg.max_iters}",
            flush=True,
        )

    def steps(self, stop: StopRequested) -> None:
        """From the run's step to max_iters: checkpoint, stop on SIGTERM, evaluate, train a step, log."""
        cfg, step = self.cfg, self.start
        self.t_last = time.time()
        self.reset_peak_memory()
        while True:
            saved = step > self.start and (step % cfg.checkpoint_interval == 0 or step == cfg.max_iters)
            if saved:
                self.checkpoint(step)
            if any_rank(self.rt, stop.flag):  # before the eval: SIGKILL follows SIGTERM within seconds
                self.stop_on_signal(step, saved, stop.signal)
            if step % cfg.eval_interval == 0 or step == cfg.max_iters:
                self.evaluate(step)
            if step >= cfg.max_iters:
                return
            lr = self.train_step(step)
            step += 1
            if step % cfg.log_interval == 0 or step == cfg.max_iters:
                self.log_train(step, lr)

    def train_step(self, step: int) -> float:
        """One optimizer step on step's global batch: this rank's micro-batches, their gradients accumulated,
        all-reduced once and clipped. Returns the learning rate it used."""
        cfg, rt, accum = self.cfg, self.rt, self.accum
        lr = lr_at(step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, rt.rank, step]).generate_state(1)[0]))
        windows = train_windows(cfg.seed, step, self.n_train, cfg.block_size, cfg.batch_size)
        for micro, starts in enumerate(windows.reshape(rt.world, accum, cfg.micro_batch_size)[rt.rank]):
            x, y = fetch(cfg.data_dir, "train", starts, cfg.block_size, rt.device, self.data_meta, self.vocab)
            sync = micro == accum - 1 or rt.world == 1  # all-reduce gradients once, on the last micro-step
            with contextlib.nullcontext() if sync else self.model.no_sync(), rt.autocast:
                loss = self.model(x, y)
                (loss / accum).backward()
            self.pending_loss += loss.detach() / accum
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.nonfinite_grads += ~torch.isfinite(grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return lr

    def log_train(self, step: int, lr: float) -> None:
        """The train loss since the last record (checked finite), the learning rate and the speed."""
        cfg, rt = self.cfg, self.rt
        n_steps = step - (step - 1) // cfg.log_interval * cfg.log_interval  # steps since the last record
        train_loss = self.check_finite(step) / rt.world / n_steps
        tokens = min(n_steps, step - self.start) * cfg.batch_size * cfg.block_size
        tok_s = tokens / (time.time() - self.t_last)
        mfu = tok_s * self.flops_per_token / (cfg.peak_flops * rt.world)
        record = {"step": step, "tokens": self.tokens(step), "lr": lr, "train_loss": train_loss}
        record.update(tok_per_s=round(tok_s, 1), mfu=round(mfu, 5))
        if rt.device.type == "cuda":  # the training steps' peak: reset at the start and after each eval
            record["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(rt.device) / 2**30, 2)
        message = f"step {step}: loss {train_loss:.4f}, lr {lr:.2e}, {tok_s:,.0f} tok/s, MFU {mfu:.1%}"
        self.log(record, message)
        self.t_last, self.pending_loss = time.time(), torch.zeros((), device=rt.device)

    def evaluate(self, step: int) -> None:
        """The val loss on the fixed windows, logged; a non-finite one stops the run."""
        cfg, rt = self.cfg, self.rt
        windows = cfg.data_dir, cfg.block_size, cfg.eval_tokens, cfg.micro_batch_size
        loss = val_loss(self.eval_model, *windows, rt.autocast, rt.rank, rt.world, self.vocab)
        if not math.isfinite(loss):
            raise UserError(f"val loss is {loss} at step {step}: stopping; {self.last_good()}")
        record = {"step": step, "tokens": self.tokens(step), "val_loss": loss}
        self.log(record, f"step {step}: val loss {loss:.4f}")
        self.reset_peak_memory()

    def checkpoint(self, step: int) -> None:
        """Model, optimizer and step (and the log) on disk; every rank resumes with the ranks' mean pending
        train loss."""
        rank_mean_loss = self.check_finite(step) / self.rt.world
        if self.rt.master:
            save_checkpoint(
                self.ckpt_path,
                self.raw,
                optimizer=self.optimizer.state_dict(),
                step=step,
                pending_loss=torch.tensor(rank_mean_loss, dtype=self.pending_loss.dtype),
                tokens_seen=self.tokens(step),
                train_config=asdict(self.began_as),
                data={"dir": self.cfg.data_dir, "meta": self.data_meta},
                **self.extra,
            )
            write_log(self.log_path, [self.header] + self.records)

    def check_finite(self, step: int) -> float:
        """The pending train loss summed over ranks; a NaN/inf loss or gradient stops the run before a good
        checkpoint is overwritten."""
        loss, bad_grads = all_sum(self.rt, self.pending_loss.item(), self.nonfinite_grads.item())
        if not math.isfinite(loss) or bad_grads:
            raise UserError(
                f"train loss {loss / self.rt.world:.4g} with {bad_grads:.0f} non-finite gradient norm(s) "
                f"before step {step}: stopping; {self.last_good()} (lower learning_rate or check the data)"
            )
        return loss

    def stop_on_signal(self, step: int, saved: bool, signum) -> None:
        """A SIGTERM (on some rank) or a Ctrl-C: the run stops at a step's end, with a checkpoint there."""
        if not saved:
            self.checkpoint(step)
        interrupted = signum == signal.SIGINT
        if self.rt.master:
            what = "interrupted (Ctrl-C)" if interrupted else "SIGTERM"
            where = f"at step {step}: checkpoint in {self.ckpt_path}"
            print(f"{what} {where}; rerun the same command to continue", flush=True)
        sys.exit(130 if interrupted else 143)

    def last_good(self) -> str:
        """The checkpoint on disk is this run's: a rerun into a used out_dir resumes or is refused."""
        path = self.ckpt_path
        return f"the last good checkpoint is {path}" if path.exists() else "no checkpoint was saved yet"

    def log(self, record: dict, message: str) -> None:
        self.records.append(record)
        if self.rt.master:
            append_log(self.log_path, record)
            print(message, flush=True)

    def tokens(self, step: int) -> int:
        return step * self.cfg.batch_size * self.cfg.block_size

    def reset_peak_memory(self) -> None:
        if self.rt.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.rt.device)


# --------------------------------------------------------------------------------------------------- main


def check_reference_exists(ref: str | None) -> None:
    """A missing reference is usually one not trained yet: name the shipped config that writes it. A hub name
    is fetched into the HF cache now, before anything is built."""
    if ref is None or Path(ref).exists():
        return
    run_dir = str(Path(ref).parent if Path(ref).suffix == ".pt" else Path(ref))
    writes = re.compile(rf"^out_dir\s*=\s*[\"']{re.escape(run_dir)}[\"']", re.M)
    configs = sorted((Path(__file__).parent / "config").glob("*.py"))
    writers = [c.name for c in configs if writes.search(c.read_text())]
    if not writers and HUB_NAME.fullmatch(ref) and not Path(ref).parent.exists():
        resolve_hub_name(ref)
        return
    how = f" (torchrun --nproc_per_node=N train.py config/{writers[0]} writes it)" if writers else ""
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
    lock = RunLock(cfg.out_dir)
    try:
        take_run_folder(lock, rt, cfg.out_dir)
        cfg = continue_or_refuse(cfg, rt.master)
        # the reference is opened once, and what it holds is read lazily by the steps that need it
        needs_reference = cfg.ref is not None and (cfg.grow or cfg.init_from != "resume")
        reference = open_weights(cfg.ref) if needs_reference else None
        with StopRequested() as stop:
            grow(cfg, rt, stop, reference, train) if cfg.grow else train(cfg, rt, stop, reference)
    finally:
        lock.release()
        if dist.is_initialized():
            dist.destroy_process_group()


def take_run_folder(lock: RunLock, rt: Runtime, out_dir: str) -> None:
    """One train.py command at a time in out_dir: rank 0 holds its lock, and every rank stops if it cannot."""
    holder = lock.take() if rt.master else None
    if any_rank(rt, holder is not None):
        raise UserError(
            f"out_dir {out_dir} is in use by another train.py run (pid {holder}): wait for it to end, or "
            f"choose another out_dir"
        )


if __name__ == "__main__":
    cli(main, interrupted="interrupted: rerun the same command to continue")
