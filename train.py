"""Train on token bins, one process or DDP; with grow=True, Inheritune v2's growth loop (growth.py).

    python train.py config/shakespeare_tiny.py --max_iters=200          # one device
    torchrun --nproc_per_node=3 train.py config/gpt2_large_inherit18.py  # DDP: the same global batch

A run reads as train() from top to bottom: the bins (inheritune/data.py), a new model for init_from (scratch;
inherit: the first n_layer blocks of `ref`; pretrained: `ref` as it is) or the run's own checkpoint (resume),
then Run.steps(): checkpoint, evaluate, train one step, log, until max_iters. With kd_ratio > 0 the student
also learns its teacher's next-token distribution (distill.py). The keys: train_config.py, or --help.

Determinism: the windows of step s are drawn from a generator seeded by (seed, s) and split over ranks and
micro-steps, and torch's RNG is reseeded from (seed, rank, s) every step, so the step number is the whole data
position and RNG state: any world size sees the same batches, and on CPU a resumed run repeats the
uninterrupted one bit for bit (on GPUs up to the nondeterminism of some backward kernels).
"""

import contextlib
import functools
import json
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from distill import Teacher, teacher_weights
from growth import grow
from inherit import inherit_layers, select_layers
from inheritune.data import check_bins, check_same_bins, fetch, open_for_training, train_windows, val_loss
from inheritune.fp8 import check_fp8_device, convert_to_float8
from inheritune.runs import RunLock, append_log, check_same_recipe, continue_or_refuse, read_log, write_log
from inheritune.runtime import Runtime, StopRequested, all_sum, any_rank, setup_runtime
from inheritune.tensor_files import safe_torch_load
from inheritune.util import UserError, atomic_write, check_can_create, cli, plot_curves
from layer_scores import choose_layers, read_scores
from model import GPT, ModelConfig
from train_config import (
    SHAPE_KEYS,
    TrainConfig,
    check_attention,
    check_reference_exists,
    load_config,
    model_config,
)
from weights import Weights, load_model, open_weights, save_checkpoint

# ------------------------------------------------------------------------------------- model and optimizer


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
        layers, selection = chosen_layers(cfg, reference.config.n_layer)
        n_layer = None if layers else cfg.n_layer
        model, provenance = inherit_layers(reference, n_layer, layers, dtype=torch.float32)
        meta["inherit"] = provenance | selection
    else:  # pretrained
        model = load_model(reference, dtype=torch.float32)
    model.crop_block_size(cfg.block_size)
    return model.to(rt.device).train(), meta


def chosen_layers(cfg: TrainConfig, ref_depth: int) -> tuple[list[int] | None, dict]:
    """(the blocks to inherit, None for the first n_layer; what the checkpoint records of the choice):
    named by inherit_layers, or n_layer of them chosen by inherit_select (each growth round chooses its
    own n_layer)."""
    if cfg.inherit_layers:
        return select_layers(ref_depth, layers=cfg.inherit_layers, flag="inherit_layers="), {}
    if cfg.inherit_select == "first":
        return None, {}
    scores = read_scores(cfg.inherit_scores, ref_depth, "inherit_scores=") if cfg.inherit_scores else None
    layers = choose_layers(cfg.inherit_select, cfg.n_layer, ref_depth, scores)
    selection = {"criterion": cfg.inherit_select, "n_layer": cfg.n_layer, "scores": cfg.inherit_scores}
    return layers, {"selection": selection}


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
    """One graph, or (scope "blocks") each block and the head-plus-loss (either loss) apart: identical blocks
    share one compiled graph, so compile time stays flat in depth, and DDP can all-reduce a block's gradients
    as its backward ends."""
    if scope == "model":
        return torch.compile(model, mode=mode, dynamic=False)
    for block in model.h:
        block.compile(mode=mode, dynamic=False)
    model.loss = torch.compile(model.loss, mode=mode, dynamic=False)
    model.distillation_loss = torch.compile(model.distillation_loss, mode=mode, dynamic=False)
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
    pending_parts: torch.Tensor | None = None  # distilling: the pending [ce, kd] losses
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
    extra = {k: ckpt[k] for k in ("inherit", "distill") if k in ckpt}
    pending = ckpt["pending_loss"], ckpt.get("pending_parts")
    return RunState(model, optimizer, began_as, step, *pending, records, extra)


def train(cfg: TrainConfig, rt: Runtime, stop: StopRequested, reference=None, teacher=None) -> list[dict]:
    """One training run from cfg.init_from to max_iters; returns its log records (every rank gets them).
    reference: the opened `ref`, which a new run starts from; teacher: the opened model it distils from."""
    meta, n_train = open_for_training(cfg.data_dir, cfg.block_size, cfg.eval_tokens)
    if cfg.init_from == "resume":
        state = resumed_run(cfg, rt)
    else:
        state = new_run(cfg, rt, meta["vocab_size"], reference)
    check_attention(cfg, state.model.config)
    if teacher is not None:
        teacher = Teacher(teacher, cfg, rt)
        teacher.check_student(state.model, state.extra.get("distill"))
        state.extra["distill"] = teacher.identity
    run = Run(cfg, rt, state, meta, n_train, teacher)
    run.begin()
    run.steps(stop)
    if rt.master:
        plot_curves({str(run.out): run.records}, run.out / "loss.png")
    return run.records


class Run:
    """A training run's moving parts: the model as trained and as evaluated, its optimizer, the log records,
    the checkpoint, and the train loss pending since the last log record."""

    def __init__(
        self, cfg: TrainConfig, rt: Runtime, state: RunState, data_meta: dict, n_train: int, teacher
    ):
        self.cfg, self.rt, self.data_meta, self.n_train = cfg, rt, data_meta, n_train
        self.raw, self.optimizer, self.start = state.model, state.optimizer, state.step
        self.records, self.extra, self.began_as = state.records, state.extra, state.began_as
        self.teacher = teacher  # distilling: the frozen model whose logits the student learns
        # the hardware's work per token: the student's training, and the teacher's forward pass
        teacher_flops = teacher.flops_per_token if teacher else 0
        self.flops_per_token = self.raw.flops_per_token(cfg.block_size) + teacher_flops
        self.vocab = self.raw.config.vocab_size
        self.model, self.eval_model = prepare_for_training(self.raw, cfg, rt)
        self.accum = cfg.batch_size // (cfg.micro_batch_size * rt.world)
        self.out = Path(cfg.out_dir)
        self.ckpt_path, self.log_path = self.out / "ckpt.pt", self.out / "log.jsonl"
        self.pending_loss = state.pending_loss.to(rt.device)
        if teacher is not None:
            parts = state.pending_parts if state.pending_parts is not None else torch.zeros(2)
            self.pending_parts = parts.to(rt.device)
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
        print(self.memory_estimate(), flush=True)

    def memory_estimate(self) -> str:
        """What a step should hold per GPU (GPT.training_memory; a distilling run adds its teacher's weights
        and logits), in a line."""
        parts = self.raw.training_memory(self.cfg.micro_batch_size, self.cfg.block_size)
        if self.teacher is not None:
            teacher = self.teacher.model
            tokens = self.cfg.micro_batch_size * self.cfg.block_size
            parts["teacher"] = teacher.num_params() * 2 + teacher.config.padded_vocab_size * tokens * 2
        unit, scale = ("GiB", 2**30) if sum(parts.values()) >= 2**30 else ("MiB", 2**20)
        terms = " + ".join(f"{name} {size / scale:.2f}" for name, size in parts.items())
        return f"memory per device, estimated: {terms} = {sum(parts.values()) / scale:.2f} {unit}"

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
            teacher_logits = None if self.teacher is None else self.teacher.logits(x)
            with contextlib.nullcontext() if sync else self.model.no_sync(), rt.autocast:
                loss = self.loss(x, y, teacher_logits, accum)
                (loss / accum).backward()
            self.pending_loss += loss.detach() / accum
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.nonfinite_grads += ~torch.isfinite(grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return lr

    def loss(self, x, y, teacher_logits, accum: int) -> torch.Tensor:
        """The micro-batch's training loss; distilling, also adds its [ce, kd] parts to the pending ones."""
        if teacher_logits is None:
            return self.model(x, y)
        cfg = self.cfg
        parts = self.model(x, y, teacher_logits, cfg.kd_ratio, cfg.kd_temperature)
        self.pending_parts += parts[1:].detach() / accum
        return parts[0]

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
        if self.teacher is not None:  # the two terms, each as its own mean over the steps
            ce, kd = (v / rt.world / n_steps for v in all_sum(rt, *self.pending_parts.tolist()))
            record.update(ce_loss=ce, kd_loss=kd)
            message += f" (ce {ce:.4f}, kd {kd:.4f})"
            self.pending_parts = torch.zeros(2, device=rt.device)
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
        message = f"val loss {loss:.4f}"
        if self.teacher is not None:
            record["val_kl"] = self.teacher.val_kl(self.eval_model, cfg)
            message += f", KL to the teacher {record['val_kl']:.4f}"
        self.log(record, f"step {step}: {message}")
        self.reset_peak_memory()

    def checkpoint(self, step: int) -> None:
        """Model, optimizer and step (and the log) on disk; every rank resumes with the ranks' mean pending
        train loss."""
        rank_mean_loss = self.check_finite(step) / self.rt.world
        if self.teacher is not None:
            parts = [v / self.rt.world for v in all_sum(self.rt, *self.pending_parts.tolist())]
            self.extra["pending_parts"] = torch.tensor(parts, dtype=self.pending_parts.dtype)
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
        if cfg.inherit_scores and reference is not None:  # before anything is written, not at round 1
            read_scores(cfg.inherit_scores, reference.config.n_layer, "inherit_scores=")
        run = functools.partial(train, teacher=teacher_weights(cfg, reference))
        with StopRequested() as stop:
            grow(cfg, rt, stop, reference, run) if cfg.grow else run(cfg, rt, stop, reference)
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
