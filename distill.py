"""Distillation: the student learns its teacher's next-token distribution beside the next token (Hinton et al.
2015; as NVIDIA's Minitron retrains depth-pruned models). The teacher is the run's reference unless `teacher`
names another model of the same tokenizer; with kd_ratio = r and kd_temperature = T, train.py minimises

    (1 - r) CE(student, next token) + r T^2 KL(softmax(teacher / T) || softmax(student / T))

(inheritune/losses.py's DistillationLoss, both terms in one pass over 16-bit logits). The teacher is frozen:
forward only, in the run's compute dtype (bfloat16 on GPUs), compiled as the student is, with no gradients,
optimizer state or checkpoint of its own; a run's checkpoint records which teacher it learned from."""

import torch

from inheritune.data import all_reduced_mean, check_bins, val_batches
from inheritune.util import UserError
from model import GPT
from weights import Weights, checkpoint_identity, load_model, open_weights


def teacher_weights(cfg, reference: Weights | None) -> Weights | None:
    """The teacher a run distils from (None when kd_ratio is 0), opened once and checked against the bins
    and the reference before anything is written: `teacher`, else the reference."""
    if cfg.kd_ratio == 0:
        return None
    spec = cfg.teacher or cfg.ref
    is_reference = reference is not None and spec in (cfg.ref, reference.path)
    weights = reference if is_reference else open_weights(spec)
    if weights.config.block_size < cfg.block_size:
        raise UserError(
            f"teacher {spec} sees {weights.config.block_size} tokens, fewer than block_size="
            f"{cfg.block_size}: lower block_size or distil from a model of a longer context"
        )
    check_teacher(weights, spec, cfg.data_dir)
    if reference is not None and cfg.init_from != "scratch":  # the student's vocabulary is the reference's
        check_same_vocabulary(weights.config.vocab_size, spec, reference.config.vocab_size)
    return weights


def check_teacher(weights: Weights, spec: str, data_dir) -> None:
    """The teacher's tokenizer is the bins' (by hash, as for the reference)."""
    try:
        check_bins(data_dir, weights.config.vocab_size, weights.tokenizer_hash)
    except UserError as e:
        raise UserError(f"teacher {spec}: {e}") from None


def check_same_vocabulary(teacher_vocab: int, spec: str, student_vocab: int) -> None:
    if teacher_vocab != student_vocab:
        raise UserError(
            f"teacher {spec} has a vocabulary of {teacher_vocab:,} tokens and the student "
            f"{student_vocab:,}: distil from a model of the student's tokenizer and vocabulary"
        )


class Teacher:
    """A frozen model whose (B * T, padded V) logits a student learns from."""

    def __init__(self, weights: Weights, cfg, rt):
        self.spec, self.rt = cfg.teacher or cfg.ref, rt
        self.identity = {"teacher": self.spec, **checkpoint_identity(weights.path)}
        dtype = getattr(rt.autocast, "fast_dtype", torch.float32)  # bfloat16 weights under bf16 autocast
        self.model = load_model(weights, device=rt.device, dtype=dtype)
        self.model.crop_block_size(cfg.block_size)  # then frozen: cropping makes a new position table
        self.model.requires_grad_(False)
        self.vocab_size = self.model.config.vocab_size
        self.flops_per_token = self.model.flops_per_token(cfg.block_size) / 3  # the forward pass's share
        self.forward = self.model.padded_logits
        if cfg.compile and cfg.compile_scope == "blocks":
            for block in self.model.h:
                block.compile(mode=cfg.compile_mode, dynamic=False)
        elif cfg.compile:
            self.forward = torch.compile(self.forward, mode=cfg.compile_mode, dynamic=False)

    @torch.no_grad()
    def logits(self, x) -> torch.Tensor:
        with self.rt.autocast:
            return self.forward(x)

    def check_student(self, student: GPT, saved: dict | None) -> None:
        """The student shares the teacher's vocabulary; a resumed run keeps the teacher it began with."""
        check_same_vocabulary(self.vocab_size, self.spec, student.config.vocab_size)
        if saved is not None and saved["fingerprint"] != self.identity["fingerprint"]:
            raise UserError(
                f"teacher {self.spec} is not the model this run began distilling from ({saved['path']}, "
                f"fingerprint {saved['fingerprint']}, now {self.identity['fingerprint']}): resume with that "
                f"teacher, or start afresh in another out_dir"
            )

    @torch.no_grad()
    def val_kl(self, student: GPT, cfg) -> float:
        """KL(teacher || student) at temperature 1, per token, on the fixed val windows (each rank its
        share)."""
        rt, was_training = self.rt, student.training
        student.eval()
        total = count = 0.0
        windows = cfg.data_dir, cfg.block_size, cfg.eval_tokens, cfg.micro_batch_size, rt.device
        for x, y in val_batches(*windows, rt.rank, rt.world, self.vocab_size):
            with rt.autocast:
                parts = student(x, y, self.logits(x), kd_ratio=1.0, kd_temperature=1.0)
            total += parts[2].item() * y.numel()
            count += y.numel()
        student.train(was_training)
        return all_reduced_mean(total, count, rt.device, rt.world)
