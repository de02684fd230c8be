"""fp8.py on CPU (torch._scaled_mm runs there too): the scaling and casting against an independent float64
emulation, the gradients, the model conversion and its checkpoints, and train.py's refusals."""

import re

import pytest
import torch

from conftest import TINY, random_model, train_here
from inheritune.fp8 import E4M3, E5M2, Float8Linear, Float8Matmul, convert_to_float8, to_float8
from inheritune.util import UserError
from weights import load_model, save_checkpoint


def emulate(t, dtype):
    """What float8 keeps of t, rounded to nearest in float64 from the format's definition (independently of
    torch's float8 casts): scale so the largest magnitude is the format's largest finite value, then keep
    `mantissa` bits."""
    mantissa, max_normal, min_exp = {E4M3: (3, 448.0, -6), E5M2: (2, 57344.0, -14)}[dtype]
    scale = t.abs().max().double() / max_normal
    x = t.double() / scale
    exp = torch.floor(torch.log2(x.abs().clamp(min=2.0**min_exp)))
    step = 2.0 ** (exp - mantissa)
    return torch.round(x / step) * step * scale


def test_casting_matches_the_formats_definition():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(64, 48, generator=g) * torch.logspace(-3, 2, 48)  # columns over five decades
    for dtype in (E4M3, E5M2):
        t8, scale = to_float8(t, dtype)
        assert t8.dtype == dtype and t8.float().abs().max().item() == torch.finfo(dtype).max
        # scale: float32
        assert torch.allclose(t8.double() * scale.double(), emulate(t, dtype), rtol=1e-6, atol=0)


def test_forward_and_backward_equal_float64_products_of_the_float8_operands():
    """Every product is exact on the float8 values (float32 accumulation), so against the same operands
    emulated in float64 only the output's rounding remains: bf16 (2^-8 relative) for y and dx, float32 for
    dw."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 64, generator=g, requires_grad=True)
    w = (0.05 * torch.randn(48, 64, generator=g)).requires_grad_()
    y = Float8Matmul.apply(x, w)
    grad = torch.randn(32, 48, generator=g).bfloat16()  # y is bf16, so its gradient arrives in bf16
    y.backward(grad)
    xq, wq, gq = emulate(x.detach(), E4M3), emulate(w.detach(), E4M3), emulate(grad, E5M2)
    for ours, exact, rtol in (
        (y.double(), xq @ wq.T, 2**-8),
        (x.grad.double(), gq @ wq, 2**-8),
        (w.grad.double(), gq.T @ xq, 1e-5),
    ):
        assert ((ours - exact).norm() / exact.norm()).item() <= rtol
    # and what it costs against float32 arithmetic: e4m3 keeps 3 mantissa bits (each operand within 2^-4)
    assert ((y.float() - x @ w.T).norm() / (x @ w.T).norm()).item() < 0.1


def test_converted_model_trains_and_its_checkpoint_loads_as_a_plain_model(tmp_path):
    model = convert_to_float8(
        random_model("llama", n_embd=64, intermediate_size=96, vocab_size=512).train(), 64
    )
    kinds = {name: type(m).__name__ for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert kinds.pop("lm_head") == "Linear" and set(kinds.values()) == {"Float8Linear"}
    x = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):  # float8 matmuls on a CPU are slow; the loss falls ~1.5 in 6 steps
        loss = model(x, torch.roll(x, -1, 1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses
    save_checkpoint(tmp_path / "ckpt.pt", model)
    plain = load_model(tmp_path / "ckpt.pt")
    assert not any(isinstance(m, Float8Linear) for m in plain.modules())
    for m in model.modules():  # the same weights through plain matmuls
        if isinstance(m, Float8Linear):
            m.__class__ = torch.nn.Linear
    with torch.no_grad():
        assert torch.equal(plain(x), model.eval()(x))


def test_converted_model_compiles_as_one_graph_forward_and_backward():
    """torch.compile must trace Float8Matmul whole, its backward too (AOTAutograd), or the casts cannot fuse
    on a GPU; backend aot_eager checks the tracing without generating kernels."""
    model = convert_to_float8(
        random_model("llama", n_embd=64, intermediate_size=96, vocab_size=512).train(), 128
    )
    x = torch.randint(0, 512, (4, 32), generator=torch.Generator().manual_seed(3))

    def loss_and_grads(m):
        loss = m(x, torch.roll(x, -1, 1))
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        model.zero_grad()
        return loss.item(), grads

    loss, grads = loss_and_grads(model)
    loss_c, grads_c = loss_and_grads(torch.compile(model, backend="aot_eager", fullgraph=True))
    # the traced graph runs the same float32 arithmetic up to its decompositions; float8 would turn a last-bit
    # difference into a whole float8 step (12-25%) in a few elements, hence the gradients' looser bound
    assert loss_c == pytest.approx(loss, abs=1e-5)
    assert ((grads_c - grads).norm() / grads.norm()).item() < 0.05


def test_sizes_not_divisible_by_16_are_refused():
    with pytest.raises(UserError, match=r"multiples of 16; this model has \[36, 108\]"):
        convert_to_float8(random_model("gpt2", n_head=4, n_embd=36), 128)
    with pytest.raises(
        UserError, match="micro_batch_size x block_size to be a multiple of 16 \\(it is 100\\)"
    ):
        convert_to_float8(random_model("gpt2"), 100)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--device=cpu"], "fp8=True needs a GPU with float8 matmuls"),
        (["--dtype=float32"], "fp8=True trains under bfloat16 autocast"),
    ],
)
def test_train_refuses_fp8_where_it_cannot_run(args, message, small_bins, tmp_path):
    with pytest.raises(UserError, match=re.escape(message)):
        train_here(*TINY, f"--data_dir={small_bins}", f"--out_dir={tmp_path / 'out'}", "--fp8=True", *args)
    assert not (tmp_path / "out").exists()
