"""The training losses, over (N, padded V) logits of 16-bit (or float32) dtype: CrossEntropy, and
DistillationLoss (cross-entropy and the KL to a teacher's distribution, in one pass). Each keeps only the
logits and a few float32 numbers per row for its backward, and rebuilds the softmaxes there."""

import torch


class CrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of (N, padded V) 16-bit logits against N targets (-100 = ignored) over the first
    vocab_size columns: F.cross_entropy's float32 math, but backward rebuilds softmax - one_hot from the
    16-bit logits and each row's float32 log-sum-exp. F.cross_entropy keeps an (N, V) float32 log-softmax for
    its backward instead, several times the memory traffic under torch.compile (docs/PERFORMANCE.md).
    Targets must be < vocab_size (train.py's check_bins makes sure); one in the padding gives an infinite
    loss."""

    @staticmethod
    def forward(ctx, logits, targets, vocab_size: int):
        padding = torch.arange(logits.shape[-1], device=logits.device) >= vocab_size
        x = logits.float().masked_fill(padding, float("-inf"))
        lse = torch.logsumexp(x, dim=-1)
        valid = targets != -100
        targets = targets.masked_fill(~valid, 0)
        count = valid.sum()
        ctx.save_for_backward(logits, lse, targets, valid, count)
        ctx.vocab_size = vocab_size
        return torch.where(valid, lse - x.gather(1, targets[:, None]).squeeze(1), 0.0).sum() / count

    @staticmethod
    def backward(ctx, grad):
        logits, lse, targets, valid, count = ctx.saved_tensors
        column = torch.arange(logits.shape[-1], device=logits.device)
        p = torch.exp(logits.float() - lse[:, None]).masked_fill(column >= ctx.vocab_size, 0.0)
        p = torch.where(column == targets[:, None], p - 1.0, p)
        scale = torch.where(valid, grad / count, 0.0)
        return (p * scale[:, None]).to(logits.dtype), None, None


# float32 elements of one chunk's temporaries: 128 MB each, whatever the batch and the vocabulary
CHUNK_ELEMENTS = 1 << 25


def row_chunks(n_rows: int, n_columns: int) -> list[tuple[int, int]]:
    """[start, end) row ranges whose float32 temporaries stay within CHUNK_ELEMENTS each; one range under
    torch.compile, whose fused kernels read the 16-bit logits and keep no float32 (N, V) tensor anyway."""
    if torch.compiler.is_compiling():
        return [(0, n_rows)]
    step = max(1, CHUNK_ELEMENTS // n_columns)
    return [(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


class DistillationLoss(torch.autograd.Function):
    """[loss, ce, kd] for student logits s and teacher logits t (both (N, padded V), the same V), N targets
    (-100 = ignored) and the first vocab_size columns:

        ce   = mean over valid rows of -log softmax(s)[target]
        kd   = mean over valid rows of T^2 KL(softmax(t / T) || softmax(s / T))
        loss = (1 - kd_ratio) ce + kd_ratio kd

    The T^2 keeps the gradient's scale independent of T (Hinton et al. 2015). Padded columns enter neither
    term. Rows are taken in chunks, so no float32 (N, V) tensor exists at once; backward keeps the 16-bit
    logits of both and three float32 numbers per row, and writes each chunk's gradient into one 16-bit
    tensor. Only the student gets a gradient; all three outputs are differentiable."""

    @staticmethod
    def forward(ctx, logits, teacher_logits, targets, vocab_size: int, kd_ratio: float, temperature: float):
        padding = torch.arange(logits.shape[-1], device=logits.device) >= vocab_size
        valid = targets != -100
        targets = targets.masked_fill(~valid, 0)
        stats, ce, kd = (
            [],
            logits.new_zeros((), dtype=torch.float32),
            logits.new_zeros((), dtype=torch.float32),
        )
        for i, j in row_chunks(*logits.shape):
            s = logits[i:j].float().masked_fill(padding, float("-inf"))
            t = teacher_logits[i:j].float().masked_fill(padding, float("-inf")) / temperature
            lse, lse_s, lse_t = (torch.logsumexp(x, dim=-1) for x in (s, s / temperature, t))
            ce_rows = lse - s.gather(1, targets[i:j, None]).squeeze(1)
            log_ratio = (t - lse_t[:, None]) - (s / temperature - lse_s[:, None])  # log p_t - log p_s
            kl_rows = (torch.exp(t - lse_t[:, None]) * log_ratio.masked_fill(padding, 0.0)).sum(-1)
            ce = ce + torch.where(valid[i:j], ce_rows, 0.0).sum()
            kd = kd + torch.where(valid[i:j], kl_rows, 0.0).sum()
            stats.append(torch.stack((lse, lse_s, lse_t), dim=1))
        count = valid.sum()
        ctx.save_for_backward(logits, teacher_logits, torch.cat(stats), targets, valid, count)
        ctx.settings = vocab_size, kd_ratio, temperature
        ce, kd = ce / count, kd * temperature**2 / count
        return torch.stack(((1 - kd_ratio) * ce + kd_ratio * kd, ce, kd))

    @staticmethod
    def backward(ctx, grad):
        logits, teacher_logits, stats, targets, valid, count = ctx.saved_tensors
        vocab_size, kd_ratio, temperature = ctx.settings
        column = torch.arange(logits.shape[-1], device=logits.device)
        # d ce / ds = softmax(s) - one_hot; d kd / ds = T (softmax(s / T) - softmax(t / T)), per valid row
        ce_scale = torch.where(valid, (grad[0] * (1 - kd_ratio) + grad[1]) / count, 0.0)
        kd_scale = torch.where(valid, (grad[0] * kd_ratio + grad[2]) * temperature / count, 0.0)
        chunks = row_chunks(*logits.shape)
        out = None if len(chunks) == 1 else torch.empty_like(logits)
        for i, j in chunks:
            lse, lse_s, lse_t = stats[i:j].unbind(1)
            s, t = logits[i:j].float(), teacher_logits[i:j].float()
            p = torch.exp(s - lse[:, None])
            p = torch.where(column == targets[i:j, None], p - 1.0, p)
            q = torch.exp(s / temperature - lse_s[:, None]) - torch.exp(t / temperature - lse_t[:, None])
            g = (p * ce_scale[i:j, None] + q * kd_scale[i:j, None]).masked_fill(column >= vocab_size, 0.0)
            if out is None:
                return g.to(logits.dtype), None, None, None, None, None
            out[i:j] = g.to(logits.dtype)
        return out, None, None, None, None, None
