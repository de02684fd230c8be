"""Which layers of a reference are worth inheriting: per-layer scores measured on a few sequences of text, and
the layers each criterion keeps. lazy_layers.py writes the scores as a report; inherit.py and train.py choose
layers by them (--select, inherit_select).

Per layer, from its attention (probabilities formed explicitly from the block's own queries and keys, one
sequence and one layer at a time) and from the residual stream it reads (x_l) and writes (x_l+1, before the
final norm):
- rank, rank_90 and the dominant single-column mass of each head's T x T attention (the paper's lazy layers);
- block_influence, ShortGPT's 1 - cos(x_l, x_l+1) (arXiv 2403.03853), and angular_distance, arccos(cos) / pi;
  and the angular distance between any two streams, for Gromov et al.'s block drop (arXiv 2403.17887).
Means are over every token and sequence (Gromov et al. used the last token only)."""

import json
import math
from pathlib import Path

import numpy as np
import torch

from inheritune.data import check_bins, open_split, read_meta
from inheritune.tokenizer import load_tokenizer
from inheritune.util import UserError
from weights import reference_tokenizer_hash, tokenizer_spec_of

# ------------------------------------------------------------------------------------------------ the scores


def load_sequences(data, ref, tokenizer, vocab_size: int, n: int, length: int) -> torch.Tensor:
    """n windows of `length` tokens spread evenly over token bins' val split or a text file's tokens, in the
    reference's tokenizer (ref: a path or an opened Weights) unless `tokenizer` names another."""
    path = Path(data)
    if path.is_dir():
        expected = load_tokenizer(tokenizer).hash if tokenizer else reference_tokenizer_hash(ref)
        # None (unknown): check_bins insists on an equal vocabulary size
        check_bins(path, vocab_size, expected)
        tokens = np.asarray(open_split(path, "val", read_meta(path)))
    elif path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(
                f"--data {path} is not UTF-8 text; pass a text file or a folder of token bins"
            ) from None
        tokens = np.array(load_tokenizer(tokenizer or tokenizer_spec_of(ref)).encode(text))
    else:
        raise UserError(
            f"--data {path}: no such file or folder; pass token bins (prepare_owt.py) or a text file"
        )
    if len(tokens) < n * length:
        raise UserError(
            f"--data {path} has {len(tokens)} tokens, fewer than --seqs x --seq_len = {n * length}; "
            f"lower them or pass more text"
        )
    starts = np.linspace(0, len(tokens) - length, n).round().astype(np.int64)
    return torch.from_numpy(np.stack([tokens[s : s + length] for s in starts]).astype(np.int64))


@torch.no_grad()
def layer_passes(model, idx):
    """For each layer in turn: its attention probabilities (B, n_head, T, T) in float32, and the residual
    stream it reads and the one it writes (B, T, n_embd; before the final norm). The model's forward runs a
    fused kernel that never forms the probabilities, so they are computed here from the block's own queries
    and keys."""
    x, rope, mask = model.block_inputs(idx)
    T = idx.shape[1]
    allowed = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril() if mask is None else mask
    for block in model.h:
        q, k, _ = block.attn.qkv(block.ln_1(x), rope)
        # grouped-query attention: a key head serves several
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        scores = q.float() @ k.float().transpose(-2, -1) / math.sqrt(q.shape[-1])
        x_out = block(x, rope, mask)
        yield scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1), x, x_out
        x = x_out


def attention_maps(model, idx):
    """Each layer's attention probabilities (B, n_head, T, T), in turn."""
    return (probs for probs, _, _ in layer_passes(model, idx))


def stream_stats(streams: list[torch.Tensor]) -> dict:
    """From the residual streams x_0 (embeddings) .. x_L (the last block's output), each (T, n_embd), in
    float64 and averaged over tokens: every pair's angular distance arccos(cos(x_i, x_j)) / pi (Gromov et
    al.), and per layer l, from its input x_l and output x_l+1, ShortGPT's block influence 1 - cos and the
    angular distance."""
    x = torch.nn.functional.normalize(torch.stack(streams).double(), dim=-1)  # (L + 1, T, d)
    cos = torch.einsum("itd,jtd->ijt", x, x).clamp(-1.0, 1.0)
    pairs = torch.arccos(cos).mean(-1) / math.pi
    return {
        "block_influence": (1 - cos.diagonal(1)).mean(0),  # diagonal(1): (T, L), layer l's input and output
        "angular_distance": pairs.diagonal(1),
        "pairs": pairs,
    }


def squared_singular_values(p: torch.Tensor) -> torch.Tensor:
    """Of each float64 matrix (..., T, T), largest first, as the eigenvalues of P P^T: svdvals' values (to
    float64 precision of the squares) at a fraction of an SVD's time on a GPU (bench/lazy_layers_cost.py,
    experiments/lazy_layers/cost_llama7b.md); the squaring is why --rank_tol stops at 1e-6."""
    return torch.linalg.eigvalsh(p @ p.mT).flip(-1).clamp(min=0)


def attention_stats(probs: torch.Tensor, rank_tol: float) -> dict:
    """Per head of attention maps (..., T, T): numerical rank, 90%-energy rank and dominant single-column
    mass."""
    p = probs.double()
    s2 = squared_singular_values(p)
    energy = s2.cumsum(-1) / s2.sum(-1, keepdim=True)
    return {
        "rank": (s2 > rank_tol**2 * s2[..., :1]).sum(-1).double(),
        "rank_90": (energy < 0.9).sum(-1).double() + 1,
        "mass": p.sum(-2).amax(-1) / probs.shape[-1],
    }


def diagnose(model, sequences: torch.Tensor, rank_tol: float, lazy_mass: float) -> dict:
    """Every number of the report: per layer and head, averaged over the sequences; the summaries; the
    suggestion."""
    sums, streams = None, None
    for row in sequences:  # one sequence at a time: one (heads, T, T) map in memory per layer
        stats, stream = [], []
        for probs, x_in, x_out in layer_passes(model, row[None]):  # a layer's map is freed before the next's
            stats.append(attention_stats(probs[0], rank_tol))
            if not stream:  # x_0, the embeddings; then each layer's output: x_1 .. x_L
                stream.append(x_in[0])
            stream.append(x_out[0])
        sums = stats if sums is None else [{k: a[k] + b[k] for k in a} for a, b in zip(sums, stats)]
        found = stream_stats(stream)
        streams = found if streams is None else {k: streams[k] + v for k, v in found.items()}
    streams = {k: v / len(sequences) for k, v in streams.items()}
    layers = []
    for i, layer in enumerate(sums):
        heads = {k: (v / len(sequences)).tolist() for k, v in layer.items()}
        summary = {
            f"{k}_{how}": f(v) for k, v in heads.items() for how, f in (("max", max), ("mean", np.mean))
        }
        summary.update({k: streams[k][i].item() for k in ("block_influence", "angular_distance")})
        layers.append(
            {"layer": i, "heads": heads, **summary, "lazy": bool(summary["mass_mean"] >= lazy_mass)}
        )
    depth = max(1, next((entry["layer"] for entry in layers if entry["lazy"]), len(layers)))
    rule = (
        f"a layer is lazy when its heads put on average >= {lazy_mass:.0%} of their attention on one key "
        f"position; start with the layers before the first lazy one: {depth} of {len(layers)}"
    )
    pairs = streams["pairs"].tolist()
    found = {"layers": layers, "suggested_depth": depth, "rule": rule}
    return found | {"angular_distances": pairs, "gromov": gromov_drop(pairs, len(layers) - depth)}


# ------------------------------------------------------------------------------- which layers, by criterion

# first: the paper's (Inheritune); last: the last N; block_influence: ShortGPT's N most influential layers;
# angular: all but Gromov et al.'s block; lazy: the N layers whose attention is least lazy
SELECTIONS = ("first", "last", "block_influence", "angular", "lazy")


def choose_layers(criterion: str, n_layer: int, ref_depth: int, scores: dict | None = None) -> list[int]:
    """The N reference layers a criterion keeps, in the reference's order. scores: lazy_layers.py's report on
    the reference (every criterion but first and last needs it)."""
    if not 1 <= n_layer <= ref_depth:
        raise UserError(f"n_layer={n_layer} is outside 1..{ref_depth} (the reference's depth)")
    if criterion in ("first", "last"):
        return list(range(n_layer)) if criterion == "first" else list(range(ref_depth - n_layer, ref_depth))
    layers = scores["layers"]
    if criterion == "angular":
        dropped = gromov_drop(scores["angular_distances"], ref_depth - n_layer)
        return [i for i in range(ref_depth) if i not in (dropped["layers"] if dropped else [])]
    key, most = {"block_influence": ("block_influence", True), "lazy": ("mass_mean", False)}[criterion]
    ranked = sorted(range(ref_depth), key=lambda i: layers[i][key], reverse=most)
    return sorted(ranked[:n_layer])


def gromov_drop(pairs, n: int) -> dict | None:
    """Gromov et al.'s choice of n layers to drop (arXiv 2403.17887): the contiguous block l .. l+n-1 whose
    input x_l and output x_l+n are closest in angular distance (pairs[i][j]: between streams i and j); None
    when nothing is dropped."""
    if n < 1:
        return None
    distances = [pairs[i][i + n] for i in range(len(pairs) - n)]
    first = min(range(len(distances)), key=distances.__getitem__)
    return {"drop": n, "layers": list(range(first, first + n)), "distance": float(distances[first])}


def read_scores(path, ref_depth: int, flag: str = "--scores ") -> dict:
    """A lazy_layers.json of the reference: its per-layer scores and angular distances. flag: how the user
    named the file (inherit.py's --scores, train.py's inherit_scores), for the messages."""
    try:
        scores = json.loads(Path(path).read_text())
        depth = len(scores["layers"])
        complete = all("block_influence" in e and "mass_mean" in e for e in scores["layers"])
        if not complete or len(scores["angular_distances"]) != depth + 1:
            raise ValueError("incomplete")
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{flag}{path} is not a lazy_layers.json with block influence and angular distances; run "
            f"`python lazy_layers.py --ref REF --data DATA --out DIR` and pass DIR/lazy_layers.json"
        ) from None
    if depth != ref_depth:
        raise UserError(f"{flag}{path} scores {depth} layers, the reference has {ref_depth}: another model's")
    return scores
