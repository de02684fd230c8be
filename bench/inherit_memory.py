"""Peak memory of inherit.py against the size of its output, and against a naive load-everything-then-slice.

    python bench/inherit_memory.py [--work /tmp/inherit_bench] [--keep]

Builds a synthetic checkpoint with OpenLLaMA-3B's shapes (26 layers, hidden 3200, intermediate 8640, 32 heads,
vocab 32000, untied head; random fp16 in 3 safetensors shards, HF layout), slices its first 13 layers (the
paper's ~1.5B target) both ways under /usr/bin/time -v, prints wall time and peak RSS, and deletes the files.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = dict(layers=26, hidden=3200, intermediate=8640, heads=32, vocab=32000)


def build_reference(folder: Path, n_shards: int = 3):
    """Random fp16 tensors in HF LlamaForCausalLM layout, written shard by shard (memory ~ one shard)."""
    import torch
    from safetensors.torch import save_file

    L, d, f, V = SHAPES["layers"], SHAPES["hidden"], SHAPES["intermediate"], SHAPES["vocab"]
    names = {"model.embed_tokens.weight": (V, d)}
    for i in range(L):
        p = f"model.layers.{i}."
        names.update(
            {
                p + "input_layernorm.weight": (d,),
                p + "post_attention_layernorm.weight": (d,),
                p + "self_attn.q_proj.weight": (d, d),
                p + "self_attn.k_proj.weight": (d, d),
                p + "self_attn.v_proj.weight": (d, d),
                p + "self_attn.o_proj.weight": (d, d),
                p + "mlp.gate_proj.weight": (f, d),
                p + "mlp.up_proj.weight": (f, d),
                p + "mlp.down_proj.weight": (d, f),
            }
        )
    names.update({"model.norm.weight": (d,), "lm_head.weight": (V, d)})
    items = list(names.items())
    per_shard = -(-len(items) // n_shards)
    weight_map, g = {}, torch.Generator().manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        file = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        shard = {
            n: (torch.randn(shape, generator=g) * 0.02).half()
            for n, shape in items[s * per_shard : (s + 1) * per_shard]
        }
        save_file(shard, folder / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
        del shard
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "architectures": ["LlamaForCausalLM"],
                "num_hidden_layers": L,
                "hidden_size": d,
                "intermediate_size": f,
                "num_attention_heads": SHAPES["heads"],
                "num_key_value_heads": SHAPES["heads"],
                "vocab_size": V,
                "max_position_embeddings": 2048,
                "rms_norm_eps": 1e-6,
                "rope_theta": 10000.0,
                "tie_word_embeddings": False,
                "torch_dtype": "float16",
            }
        )
    )


NAIVE = """
import sys, torch
sys.path.insert(0, {root!r})
from dataclasses import replace
from model import GPT, empty_model
from weights import load_model, save_checkpoint
ref = load_model({ref!r}, dtype=torch.float16)           # everything, then slice
small = empty_model(replace(ref.config, n_layer=13), dtype=torch.float16)
state = {{k: v for k, v in ref.state_dict().items() if not k.startswith("h.") or int(k.split(".")[1]) < 13}}
small.load_state_dict(state)
save_checkpoint({out!r}, small)
"""


def timed(cmd):
    """Run under /usr/bin/time -v: (wall seconds, peak RSS bytes)."""
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) * 1024
    h, m, s = re.search(
        r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", r.stderr
    ).groups()
    return int(h or 0) * 3600 + int(m) * 60 + float(s), rss


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", default="/tmp/inherit_bench")
    p.add_argument("--keep", action="store_true", help="keep the synthetic files")
    args = p.parse_args()
    work = Path(args.work)
    ref, out, naive_out = work / "ref", work / "inherited.pt", work / "naive.pt"
    try:
        if not (ref / "config.json").exists():
            print("building the synthetic OpenLLaMA-3B-shaped reference ...", flush=True)
            build_reference(ref)
        ref_bytes = sum(f.stat().st_size for f in ref.iterdir())
        _, baseline = timed(
            [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import inherit"]
        )
        t_inherit, rss_inherit = timed(
            [sys.executable, "inherit.py", "--ref", str(ref), "--n_layer", "13", "--out", str(out)]
        )
        out_bytes = out.stat().st_size
        t_naive, rss_naive = timed(
            [sys.executable, "-c", NAIVE.format(root=str(ROOT), ref=str(ref), out=str(naive_out))]
        )

        def gb(b):
            return f"{b / 1e9:.2f} GB"

        print(
            f"reference: {gb(ref_bytes)} (3 shards); output (13 of 26 layers, fp16): {gb(out_bytes)}; "
            f"interpreter + imports baseline RSS: {gb(baseline)}"
        )
        print(f"{'method':34s} {'wall s':>7s} {'peak RSS':>10s} {'(RSS - baseline) / output':>26s}")
        for name, t, rss in [
            ("inherit.py (lazy, per tensor)", t_inherit, rss_inherit),
            ("naive: load all, then slice", t_naive, rss_naive),
        ]:
            print(f"{name:34s} {t:7.1f} {gb(rss):>10s} {(rss - baseline) / out_bytes:26.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
