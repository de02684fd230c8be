"""FP8 matmuls for training (opt-in: train.py's fp8=True). Every Linear of the blocks multiplies in float8
through torch._scaled_mm, forward and backward: activations and weights as e4m3 (3 mantissa bits), the
gradients flowing back as e5m2 (2 mantissa bits, the range gradients need), each tensor with one scale
computed afresh from its own absolute maximum at every use (dynamic tensorwise scaling: nothing to calibrate,
no state in the checkpoint). The head and the embeddings stay in bf16; weights, optimizer state and
checkpoints keep their usual dtype, and a model trained this way loads and evaluates as a plain GPT. Hopper
and Ada GPUs (compute capability 8.9+) run float8 matmuls at twice the bf16 rate; the scaling and casting are
left for torch.compile to fuse into the kernels around them. What it gains: docs/PERFORMANCE.md."""

import torch
import torch.nn as nn

from inheritune.util import UserError

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2


def to_float8(t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(t / scale in dtype, scale): scale maps t's largest magnitude onto dtype's largest finite value."""
    scale = t.abs().amax().float().clamp(min=1e-12) / torch.finfo(dtype).max
    return (t.float() / scale).to(dtype), scale


def column_major(t8: torch.Tensor) -> torch.Tensor:
    """The same matrix laid out column by column, as _scaled_mm wants its second operand."""
    return t8.t().contiguous().t()


class Float8Matmul(torch.autograd.Function):
    """y = x @ weight.T for x (N, in) and weight (out, in), every product in float8, y in bf16."""

    @staticmethod
    def forward(ctx, x, weight):
        x8, sx = to_float8(x, E4M3)
        w8, sw = to_float8(weight, E4M3)
        ctx.save_for_backward(x8, sx, w8, sw)
        ctx.dtypes = x.dtype, weight.dtype
        return torch._scaled_mm(x8, w8.t(), scale_a=sx, scale_b=sw, out_dtype=torch.bfloat16)

    @staticmethod
    def backward(ctx, grad):
        x8, sx, w8, sw = ctx.saved_tensors
        g8, sg = to_float8(grad.contiguous(), E5M2)  # _scaled_mm's first operand must be row-major
        grad_x = torch._scaled_mm(g8, column_major(w8), scale_a=sg, scale_b=sw, out_dtype=torch.bfloat16)
        grad_w = torch._scaled_mm(
            g8.t().contiguous(), column_major(x8), scale_a=sg, scale_b=sx, out_dtype=torch.float32
        )
        return grad_x.to(ctx.dtypes[0]), grad_w.to(ctx.dtypes[1])


class Float8Linear(nn.Linear):
    """nn.Linear whose matmul runs in float8 (Float8Matmul); same parameters, same state_dict."""

    def forward(self, x):
        y = Float8Matmul.apply(x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias.to(y.dtype)


def check_fp8_device(device: torch.device) -> None:
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        where = (
            "a CPU"
            if device.type != "cuda"
            else f"{torch.cuda.get_device_name(device)} (compute capability "
            f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))})"
        )
        raise UserError(
            f"fp8=True needs a GPU with float8 matmuls (compute capability 8.9+: Ada, Hopper or newer); "
            f"this run is on {where}: set fp8=False"
        )


def convert_to_float8(model: nn.Module, tokens_per_micro_batch: int) -> nn.Module:
    """Every Linear of the blocks becomes a Float8Linear, in place (the head stays bf16). _scaled_mm
    multiplies only dimensions that are multiples of 16: the Linears' sizes and, in the weight gradient, the
    tokens."""
    if tokens_per_micro_batch % 16:
        raise UserError(
            f"fp8=True needs micro_batch_size x block_size to be a multiple of 16 (it is "
            f"{tokens_per_micro_batch})"
        )
    linears = [m for name, m in model.named_modules() if type(m) is nn.Linear and name.startswith("h.")]
    if odd := sorted({d for m in linears for d in m.weight.shape if d % 16}):
        raise UserError(f"fp8=True needs every Linear's sizes to be multiples of 16; this model has {odd}")
    for m in linears:
        m.__class__ = Float8Linear
    return model
