"""Shared fixtures and helpers: tiny random transformers models built from configs (never downloaded), logits
parity helpers, a small random GPT, Shakespeare bins."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import GPT, ModelConfig  # noqa: E402

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


def tiny_hf_llama(**overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = dict(
        num_hidden_layers=3,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=96,
        vocab_size=1000,
        max_position_embeddings=64,
        rope_theta=5000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    return randomize(LlamaForCausalLM(LlamaConfig(**{**kw, **overrides})))


def tiny_hf(family, **overrides):
    """A tiny random model of one of the LLaMA-shaped families, with the family's features switched on so that
    they matter at 64 positions: Llama 3's RoPE rescaling with a short original context, Mistral's window
    below the sequence, Qwen2's q/k/v biases, Qwen3's per-head q/k norms and a head size that is not hidden /
    heads."""
    import transformers

    kw = dict(
        num_hidden_layers=3,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=96,
        vocab_size=1000,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
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


def write_gguf(hf, path, dtype):
    """A GGUF as llama.cpp's converter writes it, for a LLaMA (llama), Qwen2 or Qwen3 transformers model."""
    import gguf

    c = hf.config
    arch = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}[c.model_type]
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    writer = gguf.GGUFWriter(str(path), arch)
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
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm",
    }
    for name, t in hf.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        if name.startswith("model.layers."):
            i, rest = name.split(".")[2], ".".join(name.split(".")[3:])
            module, kind = rest.rsplit(".", 1)
            gguf_name = f"blk.{i}.{per_layer[module]}.{kind}"
            if arch == "llama" and module == "self_attn.q_proj":
                t = rotary_interleave(t, c.num_attention_heads)
            if arch == "llama" and module == "self_attn.k_proj":
                t = rotary_interleave(t, c.num_key_value_heads)
        else:
            gguf_name = names[name]
        writer.add_tensor(gguf_name, t.numpy().astype(dtype if t.dim() == 2 else "float32"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


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


# ------------------------------------------------------------------ logits parity helpers and a random model


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
