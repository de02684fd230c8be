"""train.py's settings: every key with its default, meaning and accepted values (TrainConfig, one dataclass:
`python train.py --help` prints it), read from config files and --key=value overrides (load_config), and the
checks of keys that depend on each other, on the world size, on the model (check_attention) or on a reference
that must exist."""

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

from inheritune.data import EVAL_TOKENS
from inheritune.util import HUB_NAME, UserError, apply_config_args, check_settings, resolve_hub_name, setting
from layer_scores import SELECTIONS
from model import ARCHS, ModelConfig

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
    inherit_select: str = setting("first", "which n_layer blocks (inherit.py --select)", choices=SELECTIONS)
    inherit_scores: str | None = setting(
        None, "the reference's lazy_layers.json, which inherit_select ranks by"
    )
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
    grow_references: str | None = setting(
        None, "ref's other seeds (comma-separated): decide on all refs' mean"
    )
    grow_other_recipe: bool = setting(
        False, "compare with a ref trained with another recipe (final val losses)"
    )
    # distillation
    kd_ratio: float = setting(0.0, "r: (1-r) CE + r T^2 KL(teacher||student); 0: off", at_least=0, at_most=1)
    kd_temperature: float = setting(1.0, "T: compare softmax(logits / T) of teacher and student", above=0)
    teacher: str | None = setting(None, "model distilled from (as ref takes them); None: ref")

    SECTIONS: ClassVar[dict] = {  # --help's titles, by the first key of each group
        "out_dir": "where",
        "arch": "model (a scratch run without ref builds this shape; the other runs take only n_layer)",
        "batch_size": "batch: batch_size sequences of block_size tokens per optimizer step",
        "max_iters": "AdamW, linear warmup, cosine decay",
        "eval_interval": "evaluation, logging, checkpoints",
        "device": "system",
        "grow": "Inheritune v2 growth loop",
        "kd_ratio": "distillation from a teacher (distill.py); every growth round distils from it",
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
        raise UserError("grow=True chooses n_layer blocks each round (inherit_select); unset inherit_layers")
    check_selection(cfg)
    if (cfg.grow_references or cfg.grow_other_recipe) and not cfg.grow:
        raise UserError(
            "grow_references and grow_other_recipe are the growth loop's: set grow=True or unset them"
        )
    if cfg.grow and cfg.init_from not in ("scratch", "inherit"):
        raise UserError(
            f"grow=True inherits every round from ref, so init_from={cfg.init_from} has no effect: drop it"
        )
    if cfg.kd_ratio > 0 and not (cfg.teacher or cfg.ref):
        raise UserError(f"kd_ratio={cfg.kd_ratio:g} distils from a teacher: set teacher=... or ref=...")
    if cfg.teacher and cfg.kd_ratio == 0:
        raise UserError(f"teacher={cfg.teacher} is set but kd_ratio=0 (no distillation): set kd_ratio > 0")
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


def check_selection(cfg: TrainConfig) -> None:
    """inherit_select and inherit_scores go with an inheriting run, and with each other."""
    if cfg.inherit_select != "first" and not (cfg.init_from == "inherit" or cfg.grow):
        raise UserError(
            f"inherit_select={cfg.inherit_select} chooses inherited blocks: set init_from=inherit"
        )
    if cfg.inherit_select != "first" and cfg.inherit_layers:
        raise UserError("inherit_layers names the blocks already; unset inherit_select or inherit_layers")
    needs_scores = cfg.inherit_select not in ("first", "last")
    if needs_scores and not cfg.inherit_scores:
        raise UserError(
            f"inherit_select={cfg.inherit_select} ranks the reference's layers: set inherit_scores="
            f"DIR/lazy_layers.json (python lazy_layers.py --ref REF --data DATA --out DIR writes it)"
        )
    if cfg.inherit_scores and not needs_scores:
        raise UserError("inherit_scores is read by inherit_select block_influence, angular or lazy; unset it")


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


SHAPE_KEYS = [f.name for f in fields(ModelConfig) if f.name in TrainConfig.__dataclass_fields__]


def model_config(cfg: TrainConfig, vocab_size: int) -> ModelConfig:
    """The shape a from-scratch run trains (bench/throughput.py measures the same)."""
    return ModelConfig(vocab_size=vocab_size, **{k: getattr(cfg, k) for k in SHAPE_KEYS})


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
