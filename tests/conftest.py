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
    """Random weights everywhere (norm gains around 1), so a wrong mapping of any tensor shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in hf_model.named_parameters():
            is_gain = ("norm" in name or "ln_" in name) and name.endswith("weight")
            p.copy_((1.0 if is_gain else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
    return hf_model.eval()


def tiny_hf_gpt2(**overrides):
    from transformers import GPT2Config, GPT2LMHeadModel
    kw = dict(n_layer=3, n_embd=64, n_head=4, vocab_size=1000, n_positions=64, bos_token_id=999, eos_token_id=999)
    return randomize(GPT2LMHeadModel(GPT2Config(**{**kw, **overrides})))


def tiny_hf_llama(**overrides):
    from transformers import LlamaConfig, LlamaForCausalLM
    kw = dict(num_hidden_layers=3, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=96, vocab_size=1000, max_position_embeddings=64, rope_theta=5000.0,
              rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    return randomize(LlamaForCausalLM(LlamaConfig(**{**kw, **overrides})))


def rotary_interleave(w, n_head):
    """What llama.cpp's converter does to Q/K rows (written here independently of model.py)."""
    head_dim = w.shape[0] // n_head
    return w.reshape(n_head, 2, head_dim // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(hf, path, dtype):
    import gguf
    c = hf.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"] if hasattr(c, "rope_parameters") else c.rope_theta)
    writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    writer.add_bos_token_id(c.bos_token_id)
    writer.add_eos_token_id(c.eos_token_id)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                 "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm":
                 "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, t in hf.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        if name.startswith("model.layers."):
            i, rest = name.split(".")[2], ".".join(name.split(".")[3:]).removesuffix(".weight")
            gguf_name = f"blk.{i}.{per_layer[rest]}.weight"
            if rest == "self_attn.q_proj":
                t = rotary_interleave(t, c.num_attention_heads)
            if rest == "self_attn.k_proj":
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

    from data import shakespeare_files
    root = tmp_path_factory.mktemp("small_bins")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    files = [str(f) for f in shakespeare_files()]
    tok.train(files[:10], trainer)
    tok.save(str(root / "tokenizer.json"))
    r = subprocess.run([sys.executable, "prepare_owt.py", "--source", "shakespeare", "--out", str(root / "data"),
                        "--tokenizer", str(root / "tokenizer.json"), "--quiet"], cwd=ROOT, capture_output=True, text=True)
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
}


def random_model(arch, **kw):
    base = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=1000, block_size=64)
    if arch == "llama":
        base.update(n_kv_head=2, intermediate_size=96, rope_theta=5000.0)
    torch.manual_seed(0)
    model = GPT(ModelConfig(arch=arch, **{**base, **kw}))
    with torch.no_grad():  # move norms and biases off their trivial init so the export must carry them
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()
