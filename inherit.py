"""Inheritune, step 1 (Algorithm 1 of Sanyal et al. 2024): a smaller model initialised from a larger one.

    python inherit.py --ref REF --n_layer 18 --out inherited.pt
    # any blocks, in the order given; negatives count from the end
    python inherit.py --ref REF --layers 0-5,30-35 --out x.pt
    # N blocks chosen by a criterion, by lazy_layers.py's scores of the reference (or --data to measure them)
    python inherit.py --ref REF --n_layer 18 --select block_influence --scores DIR/lazy_layers.json --out x.pt

The new model gets the reference's token embedding, position embedding (GPT-2), the selected blocks, the final
norm and the head. The paper's published code copies only the blocks and the head, leaving GPT-2's wpe/ln_f
and LLaMA's embedding/norm random; here every tensor has a recorded source, and a tensor left freshly
initialised is an error unless asked for with --reinit. REF is anything weights.load_model reads; only the
needed tensors are read. --out must be a new file unless --overwrite says to replace it, and is never a file
of the reference.

--select keeps N blocks, in the reference's order: first (the paper), last, block_influence (ShortGPT: the N
with the largest 1 - cos between the stream a block reads and writes), angular (Gromov et al.: all but the
contiguous block whose input and output streams are closest) or lazy (the N whose heads put the least
attention on one key); the checkpoint records the criterion and the scores file. --fresh_blocks keeps the
reference's embeddings, final norm and head and initialises every block fresh: how much of a student's start
is the embeddings alone."""

import argparse
import re
from dataclasses import replace
from pathlib import Path

import torch

from inheritune.util import UserError, check_new_output, cli
from layer_scores import SELECTIONS, choose_layers, diagnose, load_sequences, read_scores
from model import GPT, empty_model
from weights import checkpoint_identity, load_model, load_tensors, opened, save_checkpoint

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_layers(spec: str, ref_depth: int, flag: str = "--layers ") -> list[int]:
    """'0-11' | '0,2,4' | '0-5,30-35' | '-2,-1' -> reference layer indices, in the order given. flag: how the
    user wrote the spec (inherit.py's --layers, train.py's inherit_layers), for the messages."""
    layers = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?", part)
        if not m:
            raise UserError(f"bad layer spec '{part}' in {flag}{spec}; use e.g. 0-11, 0,2,4 or 0-5,30-35")
        ends = [int(g) + ref_depth if int(g) < 0 else int(g) for g in m.groups() if g is not None]
        for i in ends:
            if not 0 <= i < ref_depth:
                raise UserError(
                    f"layer {part.strip()} is out of range: the reference has {ref_depth} layers "
                    f"(0..{ref_depth - 1}, or -{ref_depth}..-1)"
                )
        first, last = ends[0], ends[-1]
        layers += range(first, last + 1) if first <= last else range(first, last - 1, -1)
    if repeated := sorted({i for i in layers if layers.count(i) > 1}):
        raise UserError(
            f"layers {repeated} are selected more than once in {flag}{spec}; each block is copied once"
        )
    return layers


def select_layers(ref_depth: int, n_layer=None, layers=None, flag: str = "--layers ") -> list[int]:
    """The reference layers to inherit: the first n_layer (the paper), or an explicit selection (a spec string
    or a list of indices)."""
    if (n_layer is None) == (layers is None):
        raise UserError("give exactly one of n_layer (the first N blocks) or layers (e.g. 0-11)")
    if layers is not None:
        spec = layers if isinstance(layers, str) else ",".join(map(str, layers))
        return parse_layers(spec, ref_depth, flag)
    if not 1 <= n_layer <= ref_depth:
        raise UserError(f"n_layer={n_layer} is outside 1..{ref_depth} (the reference's depth)")
    return list(range(n_layer))


# ---------------------------------------------------------------------------------------------- inheriting


def inherit_layers(
    ref,
    n_layer: int | None = None,
    layers=None,
    reinit: tuple[str, ...] = (),
    dtype: torch.dtype | None = None,
    device="cpu",
    seed: int = 0,
) -> tuple[GPT, dict]:
    """Inheritune's initialisation: a model with the selected blocks of `ref` (a path, or a reference opened
    with weights.open_weights) plus its embeddings, final norm and head. Returns (model, provenance);
    provenance names the reference tensor(s) behind every parameter.

    reinit: module names of the new model to initialise fresh instead (e.g. ("lm_head",) or ("h.3",));
    everything else must come from the reference. dtype: None keeps the reference's (GGUF dequantises to
    float32)."""
    weights = opened(ref)
    selected = select_layers(weights.config.n_layer, n_layer, layers)
    config = replace(weights.config, n_layer=len(selected))  # a new config: the reference's is left untouched
    mapping, sources = tensor_sources(weights, config, selected, reinit)
    # keep the reference's storage dtype (read off a small tensor): no silent up/down-casting
    if dtype is None:
        dtype = weights.get("ln_f.weight").dtype if "ln_f.weight" in mapping else torch.float32
    model = empty_model(config, device=device, dtype=dtype)
    fresh = [name for name, source in sources.items() if source == "reinit"]
    if fresh:
        torch.manual_seed(seed)
        model.init_weights(tuple(reinit))
    load_tensors(model, weights, mapping)  # one tensor at a time: peak memory ~ the output, not the reference
    provenance = {
        "reference": checkpoint_identity(weights.path),
        "reference_config": weights.config.to_dict(),
        "layers": selected,
        "reinit": fresh,
        "sources": sources,
    }
    return model, provenance


def tensor_sources(weights, config, selected: list[int], reinit: tuple[str, ...]) -> tuple[dict, dict]:
    """(ours -> the reference's tensor under our names, for every tensor read; ours -> what it comes from, for
    every tensor: the file's tensor names, "reinit" or "tied to wte.weight"). Every source is checked before
    anything is read."""
    with torch.device("meta"):
        new_names = list(GPT(config).state_dict())

    def in_reinit(name):
        return any(name == r or name.startswith(r + ".") for r in reinit)

    if bad := [r for r in reinit if not any(n == r or n.startswith(r + ".") for n in new_names)]:
        raise UserError(f"--reinit {bad}: no such module in the new model; use names like lm_head, ln_f, h.0")
    tied = config.tie_embeddings
    if tied and in_reinit("lm_head.weight") != in_reinit("wte.weight"):
        raise UserError("lm_head is tied to wte (one tensor): reinit both or neither")

    def source_of(
        name: str,
    ) -> str:  # the reference's name for a tensor of ours: h.{j}.* <- h.{selected[j]}.*
        m = re.match(r"h\.(\d+)\.(.*)", name)
        return f"h.{selected[int(m.group(1))]}.{m.group(2)}" if m else name

    mapping = {
        n: source_of(n) for n in new_names if not in_reinit(n) and not (tied and n == "lm_head.weight")
    }
    sources = {n: "reinit" if in_reinit(n) else "tied to wte.weight" for n in new_names}
    for name, ref_name in mapping.items():
        sources[name] = weights.sources(ref_name)
        if missing := [s for s in sources[name] if s not in weights.file_names]:
            module = name.rsplit(".", 1)[0]
            raise UserError(
                f"the reference has no tensor {missing[0]} for {name}; to initialise {module} fresh on "
                f"purpose, run inherit.py --reinit {module} (and train its output with init_from=pretrained)"
            )
    return mapping, sources


def format_audit(provenance: dict) -> str:
    """A short human-readable account: reference, layers, and where each group of tensors came from."""
    ref, layers = provenance["reference"], provenance["layers"]
    cfg = provenance["reference_config"]
    lines = [
        f"reference: {ref['path']} ({cfg['arch']}, {cfg['n_layer']} layers, {ref['bytes'] / 1e6:,.1f} MB, "
        f"fingerprint {ref['fingerprint']})",
        f"layers: {len(layers)} of {cfg['n_layer']}: new block j <- reference block {compact(layers)}",
    ]
    blocks, slots = {}, {}
    # one line per non-block tensor, one per block, in model order
    for name, src in provenance["sources"].items():
        if m := re.match(r"h\.(\d+)\.", name):
            j = int(m.group(1))
            slots.setdefault(j, len(lines))
            lines += [] if j in blocks else [""]
            blocks.setdefault(j, []).append(src)
        else:
            lines.append(f"  {name:22s} <- {src if isinstance(src, str) else ' + '.join(src)}")
    for j, srcs in blocks.items():
        copied = [s[0] for s in srcs if s != "reinit"]
        origin = re.match(r"(.*?\.\d+)\.", copied[0]).group(1) + ".*" if copied else "-"
        fresh = f" ({len(srcs) - len(copied)} reinitialised)" if len(copied) < len(srcs) else ""
        lines[slots[j]] = f"  {f'h.{j}.* ({len(srcs)} tensors)':22s} <- {origin}{fresh}"
    lines.append(f"reinitialised on purpose: {', '.join(provenance['reinit']) or 'nothing'}")
    return "\n".join(lines)


def compact(layers: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8'."""
    runs = []
    for i in layers:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs)


def check_out(out: Path, ref: str, overwrite: bool) -> None:
    """--out names a new file, or an existing one --overwrite replaces; never a file of the reference."""
    ref_path, target = Path(ref).resolve(), out.resolve()
    if target == ref_path or (target.exists() and target.is_relative_to(ref_path)):
        raise UserError(
            f"--out {out} is a file of the reference, which inherit.py never writes; choose another"
        )
    check_new_output(out, overwrite, example="inherited.pt")


def selected_by(args, reference) -> tuple[dict, dict]:
    """(inherit_layers' layer arguments, what the checkpoint records of the choice) for --n_layer with
    --select, or --layers."""
    ref_depth, needs = reference.config.n_layer, args.select not in ("first", "last")
    if args.layers is not None and args.select != "first":
        raise UserError("--select chooses --n_layer blocks; with --layers the blocks are named already")
    if (args.scores or args.data) and not needs:
        raise UserError(
            "--scores and --data are read by --select block_influence, angular or lazy; drop them"
        )
    if args.layers is not None or args.select == "first":
        return {"n_layer": args.n_layer, "layers": args.layers}, {}
    if needs and bool(args.scores) == bool(args.data):
        raise UserError(
            f"--select {args.select} ranks the reference's layers by their scores: pass --scores "
            f"DIR/lazy_layers.json (lazy_layers.py writes it) or --data DATA to measure them now"
        )
    scores, source = None, None
    if needs:
        scores = read_scores(args.scores, ref_depth) if args.scores else measured_scores(args, reference)
        source = args.scores or f"measured on {args.data} ({args.seqs} x {args.seq_len} tokens)"
    layers = choose_layers(args.select, args.n_layer, ref_depth, scores)
    selection = {"criterion": args.select, "n_layer": args.n_layer, "scores": source}
    return {"layers": layers}, {"selection": selection}


def measured_scores(args, reference) -> dict:
    """lazy_layers.py's scores of the reference on --seqs windows of --seq_len tokens of --data, now."""
    model = load_model(reference)
    seq_len = min(args.seq_len, model.config.block_size)
    sequences = load_sequences(args.data, reference, None, model.config.vocab_size, args.seqs, seq_len)
    return diagnose(model, sequences, rank_tol=1e-2, lazy_mass=0.5)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ref", required=True, help="reference: project .pt, HF model folder or .gguf")
    p.add_argument(
        "--out", required=True, help="output project checkpoint (.pt); a new file unless --overwrite"
    )
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--n_layer", type=int, help="inherit the first N blocks (the paper)")
    group.add_argument("--layers", help="explicit blocks, e.g. 0-11, 0,2,4,6, 0-5,30-35, -2,-1")
    p.add_argument(
        "--select",
        choices=SELECTIONS,
        default="first",
        help="which N blocks --n_layer keeps (default: first)",
    )
    p.add_argument("--scores", help="the reference's lazy_layers.json: the scores --select reads")
    p.add_argument("--data", help="or measure them now on token bins (their val split) or a text file")
    p.add_argument("--seqs", type=int, default=8, help="--data: sequences, spread evenly over the data")
    p.add_argument(
        "--seq_len", type=int, default=256, help="--data: tokens per sequence (at most the context)"
    )
    p.add_argument("--reinit", default="", help="comma-separated modules to initialise fresh, e.g. lm_head")
    p.add_argument(
        "--fresh_blocks",
        action="store_true",
        help="the embeddings-only control: every block initialised fresh (--reinit h), the rest inherited",
    )
    p.add_argument("--dtype", choices=DTYPES, help="output dtype (default: the reference's)")
    p.add_argument("--seed", type=int, default=0, help="seed for --reinit")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (never the reference)")
    args = p.parse_args(argv)
    out = Path(args.out)
    check_out(out, args.ref, args.overwrite)
    reinit = tuple(r.strip() for r in args.reinit.split(",") if r.strip()) + (
        ("h",) if args.fresh_blocks else ()
    )
    reference = opened(args.ref)
    layers, selection = selected_by(args, reference)
    dtype = DTYPES.get(args.dtype)
    model, provenance = inherit_layers(reference, **layers, reinit=reinit, dtype=dtype, seed=args.seed)
    provenance.update(selection)
    print(format_audit(provenance))
    # atomic: an existing --out is replaced only once all is written
    save_checkpoint(out, model, inherit=provenance)
    print(f"wrote {out} ({model.num_params() / 1e6:.1f}M params, {out.stat().st_size / 1e6:,.1f} MB)")


if __name__ == "__main__":
    cli(main)
