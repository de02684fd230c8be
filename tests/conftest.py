"""Shared fixtures and helpers: tiny random transformers models built from configs (never downloaded), logits
parity helpers, a small random GPT, Shakespeare bins, and train.py runs in this process or in another."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# One thread, here and in every process a test starts: 2-core machines run the suite, and a test that shares
# the cores with its own subprocesses slows down many times over with a thread pool per process.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

import train  # noqa: E402
from inheritune.data import read_meta  # noqa: E402
from inheritune.runtime import Runtime  # noqa: E402
from model import GPT, ModelConfig  # noqa: E402
from weights import load_model  # noqa: E402

TOL = 1e-4  # logits parity with transformers, float32


def randomize(hf_model, seed=0):
    """Random weights everywhere (norm gains around 1), so a wrong mapping of any tensor shows in the
    logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in hf_model.named_parameters():
            is_gain = ("norm" in name or "ln_" in name) and name.endswith("weight")
            p.copy_((1.0 if is_gain else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
    return hf_model.eval()


def tiny_hf_gpt2(**overrides):
    from transformers import GPT2Config, GPT2LMHeadModel

    kw = dict(
        n_layer=3, n_embd=64, n_head=4, vocab_size=1000, n_positions=64, bos_token_id=999, eos_token_id=999
    )
    return randomize(GPT2LMHeadModel(GPT2Config(**{**kw, **overrides})))


# The LLaMA-shaped tiny models in transformers' names: 3 layers, width 64, 4 heads (2 for keys, values).
TINY_LLAMA = dict(num_hidden_layers=3, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=96, vocab_size=1000, max_position_embeddings=64, rms_norm_eps=1e-5,
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)  # fmt: skip


def tiny_hf_llama(**overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    return randomize(LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, "rope_theta": 5000.0, **overrides})))


def tiny_hf(family, **overrides):
    """A tiny random model of one of the LLaMA-shaped families, with the family's features switched on so that
    they matter at 64 positions: Llama 3's RoPE rescaling with a short original context, Mistral's window
    below the sequence, Qwen2's q/k/v biases, Qwen3's per-head q/k norms and a head size that is not hidden /
    heads."""
    import transformers

    kw = dict(TINY_LLAMA)
    kw.update(
        {
            "llama3": dict(
                rope_parameters={
                    "rope_type": "llama3",
                    "rope_theta": 5000.0,
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 32,
                }
            ),
            "llama_linear": dict(
                rope_parameters={"rope_type": "linear", "rope_theta": 5000.0, "factor": 4.0}
            ),
            "mistral": dict(
                sliding_window=24, rope_parameters={"rope_type": "default", "rope_theta": 5000.0}
            ),
            "qwen2": dict(rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
            "qwen3": dict(head_dim=32, rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
        }[family],
        **overrides,
    )
    name = {
        "llama3": "Llama",
        "llama_linear": "Llama",
        "mistral": "Mistral",
        "qwen2": "Qwen2",
        "qwen3": "Qwen3",
    }[family]
    config = getattr(transformers, f"{name}Config")(**kw)
    config._attn_implementation = "eager"  # the reference path: an explicit mask, sliding window included
    return randomize(getattr(transformers, f"{name}ForCausalLM")(config))


def rotary_interleave(w, n_head):
    """What llama.cpp's converter does to Q/K rows (written here independently of model.py)."""
    head_dim = w.shape[0] // n_head
    return w.reshape(n_head, 2, head_dim // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_freqs(c, head_dim):
    """What llama.cpp's converter stores for Llama 3's RoPE scaling: one divisor per frequency
    (rope_freqs)."""
    import math

    rope = c.rope_parameters
    factors = []
    for i in range(0, head_dim, 2):
        wavelength = 2 * math.pi * rope["rope_theta"] ** (i / head_dim)
        old, low, high = (
            rope["original_max_position_embeddings"],
            rope["low_freq_factor"],
            rope["high_freq_factor"],
        )
        if wavelength < old / high:
            factors.append(1.0)
        elif wavelength > old / low:
            factors.append(rope["factor"])
        else:
            smooth = (old / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / rope["factor"] + smooth))
    return torch.tensor(factors)


# What llama.cpp's converter calls each tensor of a LLaMA-shaped transformers model (written here
# independently of weights.py's tables): the whole-model tensors, and each layer's modules.
GGUF_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
              "lm_head.weight": "output.weight"}  # fmt: skip
GGUF_LAYER_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
}  # fmt: skip


def write_gguf(hf, path, dtype, quantized=None):
    """A GGUF as llama.cpp's converter writes it, for a LLaMA (llama), Qwen2 or Qwen3 transformers model.
    quantized: {GGUF tensor name: a gguf.GGMLQuantizationType} written as zero blocks of that type."""
    import gguf

    c = hf.config
    arch = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}[c.model_type]
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    writer = gguf.GGUFWriter(str(path), arch)
    write_gguf_metadata(writer, c, head_dim)
    for name, t in hf.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        if name.startswith("model.layers."):
            i, rest = name.split(".")[2], ".".join(name.split(".")[3:])
            module, kind = rest.rsplit(".", 1)
            gguf_name = f"blk.{i}.{GGUF_LAYER_NAMES[module]}.{kind}"
            if arch == "llama" and module == "self_attn.q_proj":
                t = rotary_interleave(t, c.num_attention_heads)
            if arch == "llama" and module == "self_attn.k_proj":
                t = rotary_interleave(t, c.num_key_value_heads)
        else:
            gguf_name = GGUF_NAMES[name]
        if gguf_name in (quantized or {}):
            kind = quantized[gguf_name]
            block, block_bytes = gguf.GGML_QUANT_SIZES[kind]
            zeros = np.zeros((t.shape[0], t.shape[1] // block * block_bytes), dtype=np.uint8)
            writer.add_tensor(gguf_name, zeros, raw_dtype=kind)
            continue
        writer.add_tensor(gguf_name, t.numpy().astype(dtype if t.dim() == 2 else "float32"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_gguf_metadata(writer, c, head_dim: int) -> None:
    import gguf

    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    rope = c.rope_parameters
    writer.add_rope_freq_base(rope["rope_theta"])
    writer.add_rope_dimension_count(head_dim)
    if rope["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    if rope["rope_type"] == "llama3":
        writer.add_tensor("rope_freqs.weight", llama3_rope_freqs(c, head_dim).numpy().astype("float32"))
    writer.add_bos_token_id(c.bos_token_id)
    writer.add_eos_token_id(c.eos_token_id)


@pytest.fixture(scope="session")
def tokens():
    return torch.randint(0, 1000, (2, 64), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def small_bins(tmp_path_factory):
    """Shakespeare tokenized with a 512-token byte-level BPE trained here: real text, CPU-sized vocabulary."""
    import subprocess

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from inheritune.data import shakespeare_files

    root = tmp_path_factory.mktemp("small_bins")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    files = [str(f) for f in shakespeare_files()]
    tok.train(files[:10], trainer)
    tok.save(str(root / "tokenizer.json"))
    r = subprocess.run(
        [
            sys.executable,
            "prepare_owt.py",
            "--source",
            "shakespeare",
            "--out",
            str(root / "data"),
            "--tokenizer",
            str(root / "tokenizer.json"),
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return root / "data"


# --------------------------------------------------------- logits parity helpers and a random model


def hf_logits(hf_model, tokens):
    with torch.no_grad():
        return hf_model(tokens).logits


def our_logits(model, tokens):
    with torch.no_grad():
        return model(tokens)


def max_diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


HF_MODELS = {
    "gpt2": tiny_hf_gpt2,
    "llama_gqa": tiny_hf_llama,
    "llama_tied": lambda: tiny_hf_llama(tie_word_embeddings=True, num_key_value_heads=4),
    "llama3": lambda: tiny_hf("llama3"),
    "llama_linear": lambda: tiny_hf("llama_linear", tie_word_embeddings=True),
    "mistral": lambda: tiny_hf("mistral"),
    "qwen2": lambda: tiny_hf("qwen2", tie_word_embeddings=True),
    "qwen2_untied": lambda: tiny_hf("qwen2"),
    "qwen3": lambda: tiny_hf("qwen3", tie_word_embeddings=True),
}


def random_model(arch, **kw):
    base = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=1000, block_size=64)
    if arch == "llama":
        base.update(n_kv_head=2, intermediate_size=96, rope_theta=5000.0)
    torch.manual_seed(0)
    model = GPT(ModelConfig(arch=arch, **{**base, **kw}))
    with torch.no_grad():  # move norms and biases off their trivial init so the export must carry them
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def truncated_reference_logits(hf, layers, tokens):
    """The reference's own forward through only the selected blocks, then its own final norm and head."""
    body = hf.transformer if hasattr(hf, "transformer") else hf.model
    full = body.h if hasattr(body, "h") else body.layers
    try:
        if hasattr(body, "h"):
            body.h = torch.nn.ModuleList(full[i] for i in layers)
        else:
            body.layers = torch.nn.ModuleList(full[i] for i in layers)
        with torch.no_grad():
            return hf(tokens, use_cache=False).logits
    finally:
        if hasattr(body, "h"):
            body.h = full
        else:
            body.layers = full


def gpt2_with_a_silent_layer(n_layer: int = 4, silent: int = 2) -> GPT:
    """A random GPT-2 whose layer `silent` writes nothing into the residual stream (zeroed output
    projections): x_silent+1 = x_silent, so its block influence is 0."""
    model = random_model("gpt2", n_layer=n_layer)
    with torch.no_grad():
        for linear in (model.h[silent].attn.c_proj, model.h[silent].mlp.c_proj):
            linear.weight.zero_()
            linear.bias.zero_()
    return model


def copy_bins(small_bins, folder, train=None, val=None, **meta):
    """The small bins copied into folder, with train/val ids replaced (arrays) and meta.json keys replaced (a
    value of None deletes the key): bins as another tool, or a damaged disk, might leave them."""
    shutil.copytree(small_bins, folder)
    document = json.loads((folder / "meta.json").read_text())
    for split, ids in (("train", train), ("val", val)):
        if ids is not None:
            np.asarray(ids, dtype=np.uint16).tofile(folder / f"{split}.bin")
            document[split]["tokens"] = len(ids)
    for key, value in meta.items():
        document.pop(key) if value is None else document.update({key: value})
    (folder / "meta.json").write_text(json.dumps(document))
    return folder


def tree_hash(folder) -> str:
    """One hash over the names and bytes of the files under folder (or of one file): equal if none changed."""
    import hashlib

    digest, folder = hashlib.sha256(), Path(folder)
    for path in sorted(folder.rglob("*")) if folder.is_dir() else [folder]:
        if path.is_file():
            digest.update(str(path.relative_to(folder.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------- train.py runs

TINY = ["--arch=gpt2", "--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=8",
        "--micro_batch_size=2", "--learning_rate=3e-3", "--min_lr=3e-4", "--warmup_iters=5",
        "--eval_tokens=2048", "--log_interval=5", "--eval_interval=10", "--checkpoint_interval=10",
        "--device=cpu"]  # fmt: skip
# train.py's float8 path on a CPU (torch._scaled_mm runs there too, slowly): tests/fp8_on_cpu.py lifts the GPU
# requirement. One block (4 Linears) and a small val budget keep its runs short.
FP8_ON_CPU = {"args": ["--fp8=True", "--dtype=bfloat16", "--n_layer=1", "--eval_tokens=256"],
              "script": "tests/fp8_on_cpu.py", "converted": "fp8_on_cpu: 4 Float8Linear"}  # fmt: skip
PLAIN = {"args": [], "script": "train.py", "converted": None}


def train_here(*args) -> None:
    """train.py's main(args) in this process: what a test of the settings, the data or the loop needs."""
    train.main([str(a) for a in args])


def run_train(*args, torchrun=0, check=True, background=None, restarts=0, env=None, path=PLAIN):
    """train.py in a process of its own, or under torchrun with `torchrun` ranks (path=FP8_ON_CPU: its float8
    path); background=<file> starts it and returns the Popen. For what needs a process: ranks, kills, exit
    codes."""
    launcher = [sys.executable]
    if torchrun:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"]
        launcher += [f"--max_restarts={restarts}"]
    cmd = [*launcher, path["script"], *map(str, args), *path["args"]]
    env = {**os.environ, **(env or {})}
    if background:
        return subprocess.Popen(
            cmd, cwd=ROOT, stdout=open(background, "w"), stderr=subprocess.STDOUT, env=env
        )
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        if path["converted"]:  # every rank converted its model: the test did not quietly run in bf16
            assert r.stdout.count(path["converted"]) == max(torchrun, 1), r.stdout
    return r


def assert_same_updates(args, run_a, run_b):
    """Two runs of one recipe whose gradients were summed in another order (ranks, DDP buckets) learned the
    same update, up to float32 rounding. Not element by element: Adam divides each gradient by its own running
    scale, so an element whose gradient is all rounding noise (near-cancelling sums) may step either way, by
    whatever the CPU's kernels round. Per tensor, the difference of the two runs' updates is ~1e-5 of the
    update's norm (measured: 2-3 ranks, 10-40 steps); a run that trains on a third of the batch wrongly is off
    by 0.3-0.6. 1e-3 sits between."""
    cfg = train.load_config(args)
    rt = Runtime(0, 1, torch.device("cpu"), contextlib.nullcontext())
    initial, _ = train.build_model(cfg, read_meta(cfg.data_dir)["vocab_size"], rt, None)
    w0, a, b = initial.state_dict(), load_model(run_a).state_dict(), load_model(run_b).state_dict()
    for name in w0:
        assert (a[name] - b[name]).norm() <= 1e-3 * (a[name] - w0[name]).norm(), name


def wait_for(predicate, proc, timeout: float, what: str) -> None:
    """Poll until predicate() holds; fail if the process ends or the time runs out first."""
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline and proc.poll() is None, f"{what}: the run ended or timed out first"
        time.sleep(0.02)


def run_log(out_dir) -> tuple[dict, list[dict]]:
    """(the run's config, its log records) from out_dir/log.jsonl."""
    lines = [json.loads(x) for x in (Path(out_dir) / "log.jsonl").read_text().splitlines()]
    return lines[0]["config"], lines[1:]


def without_timing(records):
    return [{k: v for k, v in r.items() if k not in ("tok_per_s", "mfu")} for r in records]


@pytest.fixture(scope="session")
def reference(small_bins, tmp_path_factory):
    """A 4-layer GPT-2 trained from scratch on the small bins: the growth loop's reference."""
    out = tmp_path_factory.mktemp("ref")
    train_here(*TINY, "--n_layer=4", f"--data_dir={small_bins}", "--max_iters=60", f"--out_dir={out}")
    return out / "ckpt.pt"
