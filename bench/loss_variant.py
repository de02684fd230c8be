"""Copy this tree's top-level scripts to DEST with model.CrossEntropy rewritten as a candidate, for timing it against
the current loss on one GPU with `bench/loss_step.py --repo DEST` and `bench.py --repo DEST` (issue 8).

    python bench/loss_variant.py online /root/stash/online     # log-sum-exp written out as amax -> exp -> sum
    python bench/loss_variant.py chunked /root/stash/chunked   # rows in chunks of < 2**31 elements

Both were measured and rejected (docs/PERFORMANCE.md, session 5); they stay so that the measurement can be repeated.
Each candidate is a list of exact-text replacements in model.py; if CrossEntropy has changed since, this stops and
says so instead of building something else. tests/test_bench.py checks every candidate still builds and still
computes F.cross_entropy's loss and gradient.
"""
import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# inductor turns amax -> sub -> exp -> sum into one online-softmax pass; torch.logsumexp's decomposition does not match
ONLINE = [("        lse = torch.logsumexp(x, dim=-1)\n",
           "        top = x.amax(dim=-1, keepdim=True)\n"
           "        lse = (top + (x - top).exp().sum(dim=-1, keepdim=True).log()).squeeze(-1)\n")]

# above 2**31 elements (GPT-2 124M at micro-batch 64) inductor indexes in int64; chunks keep each kernel in int32
CHUNKED = [("class CrossEntropy(torch.autograd.Function):\n",
            "CHUNK_ELEMENTS = 2**31 - 1  # the largest int32 index\n\n\nclass CrossEntropy(torch.autograd.Function):\n"),
           ("        lse = torch.logsumexp(x, dim=-1)\n",
            "        rows = max(1, CHUNK_ELEMENTS // logits.shape[-1])\n"
            "        lse = torch.cat([torch.logsumexp(c, dim=-1) for c in x.split(rows)])\n"),
           ("""        p = torch.exp(logits.float() - lse[:, None]).masked_fill(column >= ctx.vocab_size, 0.0)
        p = torch.where(column == targets[:, None], p - 1.0, p)
        scale = torch.where(valid, grad / count, 0.0)
        return (p * scale[:, None]).to(logits.dtype), None, None
""", """        scale = torch.where(valid, grad / count, 0.0)
        rows, out = max(1, CHUNK_ELEMENTS // logits.shape[-1]), []
        for lo in range(0, logits.shape[0], rows):
            s = slice(lo, lo + rows)
            p = torch.exp(logits[s].float() - lse[s, None]).masked_fill(column >= ctx.vocab_size, 0.0)
            p = torch.where(column == targets[s, None], p - 1.0, p)
            out.append((p * scale[s, None]).to(logits.dtype))
        return torch.cat(out), None, None
""")]

CANDIDATES = {"online": ONLINE, "chunked": CHUNKED}


def build(name: str, dest: Path) -> Path:
    """Write the candidate's tree to dest (replacing it) and return dest."""
    source = (ROOT / "model.py").read_text()
    for old, new in CANDIDATES[name]:
        if source.count(old) != 1:
            sys.exit(f"model.CrossEntropy no longer contains the text candidate {name!r} rewrites: "
                     f"update CANDIDATES in {Path(__file__).name}")
        source = source.replace(old, new)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for script in ROOT.glob("*.py"):
        shutil.copy(script, dest)
    (dest / "model.py").write_text(source)
    return dest


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", choices=list(CANDIDATES))
    p.add_argument("dest", type=Path)
    args = p.parse_args()
    print(build(args.name, args.dest))
