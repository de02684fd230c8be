"""Distillation: DistillationLoss against an independent F.kl_div expression (values and gradients, padded
vocabulary, ignored targets, row chunks, float32 and bfloat16); train.py's teacher (the refusals, what the
checkpoint keeps, the growth loop distilling every round) and that distilling moves the student towards its
teacher. DDP and SIGKILL-and-resume while distilling: tests/test_train_processes.py."""

import json
import re

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY, copy_bins, run_log, tiny_hf_gpt2, train_here
from inheritune import losses
from inheritune.losses import CrossEntropy, DistillationLoss
from inheritune.util import UserError

V, PADDED, N = 70, 128, 48  # vocabulary, the logits' padded width, rows


def random_logits(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    student = (torch.randn(N, PADDED, generator=g) * 3).to(dtype)
    teacher = (torch.randn(N, PADDED, generator=g) * 3).to(dtype)
    targets = torch.randint(0, V, (N,), generator=g)
    targets[::7] = -100  # ignored rows count in neither term
    return student, teacher, targets


def independent(student, teacher, targets, ratio, temperature):
    """[loss, ce, kd] by the textbook expression, in float32 on the first V columns."""
    s, t = student.float()[:, :V], teacher.float()[:, :V]
    valid = targets != -100
    ce = F.cross_entropy(s, targets, ignore_index=-100)
    log_p_s, log_p_t = F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1)
    kl_rows = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="none").sum(-1)
    kd = kl_rows[valid].mean() * temperature**2
    return torch.stack(((1 - ratio) * ce + ratio * kd, ce, kd))


# float32: the two compute the same float32 sums in other orders, ~1e-7 relative apart; 1e-5 leaves room.
# bfloat16 logits are the same numbers upcast in both, so the loss is as close; the gradient is rounded to
# bfloat16 (8 bits of mantissa: 2^-8 of the largest element) by ours only.
@pytest.mark.parametrize("dtype,grad_tol", [(torch.float32, 1e-5), (torch.bfloat16, 2**-8)])
@pytest.mark.parametrize("ratio,temperature", [(0.5, 1.0), (1.0, 2.0), (0.3, 0.7)])
@pytest.mark.parametrize("chunk_elements", [1 << 25, 5 * PADDED], ids=["one chunk", "chunks of 5 rows"])
def test_loss_and_gradients_equal_the_textbook_expression(
    dtype, grad_tol, ratio, temperature, chunk_elements, monkeypatch
):
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", chunk_elements)
    student, teacher, targets = random_logits(dtype)
    ours_in = student.clone().requires_grad_()
    ours = DistillationLoss.apply(ours_in, teacher, targets, V, ratio, temperature)
    ref_in = student.float().clone().requires_grad_()
    expected = independent(ref_in, teacher, targets, ratio, temperature)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    weights = torch.tensor([1.0, 0.3, -0.2])  # each output's gradient flows: loss, ce and kd
    (ours * weights).sum().backward()
    (expected * weights).sum().backward()
    assert ours_in.grad.dtype == dtype and not ours_in.grad[:, V:].any()  # padding gets no gradient
    scale = ref_in.grad.abs().max()
    assert (ours_in.grad.float() - ref_in.grad).abs().max() <= grad_tol * scale


def test_without_distillation_the_loss_is_the_cross_entropy():
    student, teacher, targets = random_logits(torch.float32)
    parts = DistillationLoss.apply(student, teacher, targets, V, 0.0, 1.0)
    torch.testing.assert_close(parts[0], CrossEntropy.apply(student, targets, V), rtol=1e-6, atol=0)
    same = DistillationLoss.apply(student, student, targets, V, 1.0, 3.0)  # a student that is its teacher
    assert same[2].abs() < 1e-5


# ----------------------------------------------------------------------------------------- in train.py


def distil(small_bins, out, *extra):
    return train_here(*TINY, f"--data_dir={small_bins}", "--max_iters=10", f"--out_dir={out}", *extra)


def test_the_checkpoint_names_its_teacher_and_holds_no_teacher_weights(small_bins, reference, tmp_path):
    distil(
        small_bins,
        tmp_path / "run",
        "--init_from=inherit",
        "--n_layer=2",
        f"--ref={reference}",
        "--kd_ratio=1",
    )
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert ckpt["distill"]["path"] == str(reference.resolve()) and ckpt["distill"]["fingerprint"]
    assert ckpt["config"]["n_layer"] == 2 and not any(
        ".h.3." in k or k.startswith("h.3") for k in ckpt["model"]
    )
    _, log = run_log(tmp_path / "run")
    trained = [r for r in log if "train_loss" in r]
    assert all(r["train_loss"] == pytest.approx(r["kd_loss"]) for r in trained)  # kd_ratio 1: KD only
    assert all("val_kl" in r for r in log if "val_loss" in r)


def test_distilling_moves_the_student_towards_its_teacher(small_bins, reference, tmp_path):
    """From the same random start and batches, kd_ratio=1 ends closer to the teacher on the val windows
    (KL at T=1) than kd_ratio=0 with the teacher only watched."""
    kl = {}
    for ratio in (0.0, 1.0):
        args = [f"--teacher={reference}", "--kd_ratio=1", "--max_iters=40", "--learning_rate=1e-2"]
        out = tmp_path / f"r{ratio}"
        if ratio == 0:  # the same run, where the KD term carries no weight: (1 - 1e-9) CE + 1e-9 KD
            args[1] = "--kd_ratio=1e-9"
        distil(small_bins, out, *args)
        kl[ratio] = [r["val_kl"] for r in run_log(out)[1] if "val_kl" in r]
    assert kl[0.0][0] == kl[1.0][0]  # the same start
    assert kl[1.0][-1] < 0.5 * kl[0.0][-1], kl


@pytest.mark.parametrize("scope", ["model", "blocks"])
def test_compiled_distillation_matches_eager(small_bins, reference, tmp_path, scope):
    """Under torch.compile the loss takes its rows in one piece (inductor's kernels keep no float32 (N, V)
    tensor) and, in scope blocks, is compiled apart from the blocks, as the head and CrossEntropy are: the
    same losses as eager up to float32 reassociation (~1e-6 relative here; 1e-4 leaves room)."""
    args = (
        "--kd_ratio=0.5",
        "--kd_temperature=2",
        f"--teacher={reference}",
        "--max_iters=5",
        "--eval_interval=5",
    )
    distil(small_bins, tmp_path / "eager", *args)
    distil(small_bins, tmp_path / "compiled", *args, "--compile=True", f"--compile_scope={scope}")
    eager, compiled = run_log(tmp_path / "eager")[1], run_log(tmp_path / "compiled")[1]
    assert [r["step"] for r in eager] == [r["step"] for r in compiled]
    for a, b in zip(eager, compiled):
        for key in ("train_loss", "ce_loss", "kd_loss", "val_loss", "val_kl"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4), (key, a, b)


def test_refusals_name_the_teacher(small_bins, reference, tmp_path):
    other_vocab = tmp_path / "other_vocab"
    tiny_hf_gpt2(vocab_size=640).save_pretrained(other_vocab)
    data = copy_bins(small_bins, tmp_path / "data")
    for extra, message in [
        ([f"--teacher={other_vocab}"], "vocab 512), but the model has a vocabulary of 640"),
        ([f"--teacher={tmp_path / 'missing'}"], "missing: no such file"),
        (["--teacher=x.pt", "--kd_ratio=0"], "teacher=x.pt is set but kd_ratio=0"),
        ([], "kd_ratio=0.5 distils from a teacher: set teacher=... or ref=..."),
        (["--kd_ratio=1.5"], "kd_ratio=1.5 is out of range: it must be in [0, 1]"),
        (["--kd_temperature=0"], "kd_temperature=0.0 is out of range: it must be > 0"),
    ]:
        with pytest.raises(UserError, match=re.escape(message)):
            distil(data, tmp_path / "x", "--kd_ratio=0.5", *extra)
        assert not (tmp_path / "x").exists()
    meta = json.loads((data / "meta.json").read_text())
    meta["tokenizer"]["hash"] = "another tokenizer"
    (data / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=f"teacher {re.escape(str(reference))}: .* not the model's tokenizer"):
        distil(data, tmp_path / "x", "--kd_ratio=0.5", f"--teacher={reference}")


def test_a_run_resumes_only_with_the_teacher_it_began_with(small_bins, reference, tmp_path):
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(reference.read_bytes())
    args = "--kd_ratio=0.5", f"--teacher={teacher}"
    distil(small_bins, tmp_path / "run", *args)
    distil(small_bins, tmp_path / "other", "--max_iters=5")  # another model
    (tmp_path / "other" / "ckpt.pt").replace(teacher)  # another model under the same path
    message = f"teacher {teacher} is not the model this run began distilling from"
    with pytest.raises(UserError, match=re.escape(message)):
        distil(small_bins, tmp_path / "run", *args, "--init_from=resume")


def test_every_growth_round_distils_from_the_reference(small_bins, reference, tmp_path):
    loop = ["--grow=True", "--n_layer=3", "--grow_step=1", "--max_iters=2", "--warmup_iters=1"]
    loop += ["--grow_other_recipe=True"]
    distil(small_bins, tmp_path, f"--ref={reference}", *loop, "--grow_tolerance=-100", "--kd_ratio=0.5")
    rounds = json.loads((tmp_path / "growth.json").read_text())["rounds"]
    assert [r["n_layer"] for r in rounds] == [3, 4]
    for r in rounds:
        ckpt = torch.load(f"{r['runs'][0]['dir']}/ckpt.pt", weights_only=True)
        assert ckpt["distill"]["path"] == str(reference.resolve())
        assert all("kd_loss" in rec for rec in run_log(r["runs"][0]["dir"])[1] if "train_loss" in rec)


def test_a_reference_of_a_longer_context_serves_as_teacher_and_every_growth_round(small_bins, tmp_path):
    """Cropping a model to the run's block_size leaves the opened reference's own config alone: the teacher
    (loaded after the student) and round 2 (inherited after round 1) read its full position table."""
    tiny_hf_gpt2(vocab_size=512, n_positions=64, bos_token_id=511, eos_token_id=511).save_pretrained(
        tmp_path / "ref"
    )
    ref, short = f"--ref={tmp_path / 'ref'}", ("--max_iters=2", "--warmup_iters=1")
    distil(small_bins, tmp_path / "pretrained", "--init_from=pretrained", ref, "--kd_ratio=0.5", *short)
    loop = ["--grow=True", "--n_layer=1", "--grow_step=1", "--grow_max_layer=2", "--grow_tolerance=-100"]
    distil(small_bins, tmp_path / "loop", ref, *loop, "--kd_ratio=0.5", *short)
    rounds = json.loads((tmp_path / "loop" / "growth.json").read_text())["rounds"]
    assert [r["n_layer"] for r in rounds] == [1, 2]


def test_a_teacher_of_a_shorter_context_is_refused_by_name(small_bins, tmp_path):
    tiny_hf_gpt2(vocab_size=512, n_positions=16, bos_token_id=511, eos_token_id=511).save_pretrained(
        tmp_path / "short"
    )
    message = f"teacher {tmp_path / 'short'} sees 16 tokens, fewer than block_size=32"
    with pytest.raises(UserError, match=re.escape(message)):
        distil(small_bins, tmp_path / "x", "--kd_ratio=0.5", f"--teacher={tmp_path / 'short'}")


def test_a_run_saved_before_distillation_existed_does_not_resume_distilling(small_bins, reference, tmp_path):
    distil(small_bins, tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    for key in ("kd_ratio", "kd_temperature", "teacher"):  # as a checkpoint of an older tree has it
        del ckpt["train_config"][key]
    torch.save(ckpt, tmp_path / "run" / "ckpt.pt")
    with pytest.raises(UserError, match=re.escape("kd_ratio=0.5 (was 0.0)")):
        distil(small_bins, tmp_path / "run", "--init_from=resume", "--kd_ratio=0.5", f"--teacher={reference}")
