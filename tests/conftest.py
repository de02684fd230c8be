"""Shared fixtures: tiny random transformers models built from configs (never downloaded)."""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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


@pytest.fixture(scope="session")
def tokens():
    return torch.randint(0, 1000, (2, 64), generator=torch.Generator().manual_seed(1))
