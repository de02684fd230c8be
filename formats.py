"""Our ModelConfig from and to the configs of other formats: a HF config.json (read and written) and a GGUF's
metadata (read), through one family table (HF_CLASSES). What a format holds that our model does not compute
exactly is refused by name. weights.py reads and writes the tensors."""

import torch

from inheritune.tensor_files import read_gguf_tensor
from inheritune.util import UserError
from model import ARCHS, ROPE_SCALING_KEYS, ModelConfig, rescale_rope, rope_frequencies

HF_CLASSES = dict(
    zip(
        ARCHS,
        ("GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"),
    )
)
GGUF_ARCHS = ("llama", "qwen2", "qwen3")  # llama.cpp's names; a Mistral converts to "llama"


# ---------------------------------------------------------------------------------------------- HF


def config_from_hf(hf: dict) -> ModelConfig:
    """Our config from a HF config.json (one of HF_CLASSES); what we cannot compute exactly is refused by
    name."""
    kind = hf.get("model_type")
    if kind is None or "vocab_size" not in hf:
        raise UserError("config.json has no model_type/vocab_size: not a HF model folder")
    if kind not in HF_CLASSES:
        supported = ", ".join(HF_CLASSES)
        raise UserError(f"model_type '{kind}' is not supported; inheritune reads {supported} checkpoints")
    tokens = {"vocab_size": hf["vocab_size"], "bos_token_id": hf.get("bos_token_id")}
    tokens["eos_token_id"] = hf.get("eos_token_id")
    if kind == "gpt2":
        if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise UserError(
                f"GPT-2 activation '{hf['activation_function']}' is not supported (only gelu_new)"
            )
        if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("scale_attn_weights") is False:
            raise UserError("GPT-2 with non-standard attention scaling is not supported")
        return ModelConfig(
            arch="gpt2",
            n_layer=hf["n_layer"],
            n_head=hf["n_head"],
            n_embd=hf["n_embd"],
            intermediate_size=hf.get("n_inner") or 4 * hf["n_embd"],
            block_size=hf["n_positions"],
            bias=True,
            tie_embeddings=hf.get("tie_word_embeddings", True),
            norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            **tokens,
        )
    rope = hf.get("rope_scaling") or hf.get("rope_parameters") or {}  # transformers 4 and 5 spellings
    if "original_max_position_embeddings" in hf:  # transformers gives the top-level value priority
        rope = {**rope, "original_max_position_embeddings": hf["original_max_position_embeddings"]}
    refuse_unsupported_hf(hf, kind, rope)
    return ModelConfig(
        arch=kind,
        n_layer=hf["num_hidden_layers"],
        n_head=hf["num_attention_heads"],
        n_embd=hf["hidden_size"],
        n_kv_head=hf.get("num_key_value_heads"),
        head_dim=hf.get("head_dim"),
        intermediate_size=hf["intermediate_size"],
        block_size=hf["max_position_embeddings"],
        tie_embeddings=hf.get("tie_word_embeddings", False),
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=hf.get("rope_theta") or (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0),
        rope_scaling=rope_scaling_from_hf(rope, hf["max_position_embeddings"]),
        sliding_window=hf.get("sliding_window", 4096) if kind == "mistral" else None,
        **tokens,
    )


def refuse_unsupported_hf(hf: dict, kind: str, rope: dict) -> None:
    """A LLaMA-shaped config.json's features that our model does not compute, refused by name."""
    partial_rotary = rope.get("partial_rotary_factor") or hf.get("partial_rotary_factor") or 1
    unsupported = {
        "hidden_act": hf.get("hidden_act", "silu") != "silu",
        "mlp_bias": hf.get("mlp_bias"),
        "attention_bias (a bias on o_proj too)": hf.get("attention_bias") and kind != "qwen2",
        "use_sliding_window (sliding attention on some layers)": hf.get("use_sliding_window"),
        "layer_types (attention that differs by layer)": len(set(hf.get("layer_types") or ())) > 1,
        "partial_rotary_factor": partial_rotary != 1,
    }
    if refused := [name for name, present in unsupported.items() if present]:
        raise UserError(f"{kind} with {', '.join(refused)} is not supported")


def rope_scaling_from_hf(rope: dict, max_positions: int) -> dict | None:
    """Our rope_scaling from a HF config's rope settings: None, linear or llama3; any other type refused by
    name."""
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default":
        return None
    if kind not in ROPE_SCALING_KEYS:
        raise UserError(f"RoPE scaling of type '{kind}' is not supported (default, linear and llama3 are)")
    rope = {"original_max_position_embeddings": max_positions, **rope}  # transformers' fallback for llama3
    return {"rope_type": kind, **{k: rope[k] for k in sorted(ROPE_SCALING_KEYS[kind]) if k in rope}}


HF_FAMILY_KEYS = {
    "llama": {"attention_bias": False, "mlp_bias": False},
    "mistral": {},
    "qwen2": {"use_sliding_window": False},
    "qwen3": {"attention_bias": False, "use_sliding_window": False},
}


def hf_config(config: ModelConfig) -> dict:
    """The config.json transformers needs to load our weights as the family's own class (HF_CLASSES)."""
    common = {
        "architectures": [HF_CLASSES[config.arch]],
        "model_type": config.arch,
        "vocab_size": config.vocab_size,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
    }
    if config.arch == "gpt2":
        return {
            "n_layer": config.n_layer,
            "n_head": config.n_head,
            "n_embd": config.n_embd,
            "n_inner": config.intermediate_size,
            "n_positions": config.block_size,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": config.norm_eps,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            **common,
        }
    if (config.qkv_bias, config.qk_norm) != (config.arch == "qwen2", config.arch == "qwen3") or (
        config.sliding_window and config.arch != "mistral"
    ):
        raise UserError(
            f"a {config.arch} model with qkv_bias={config.qkv_bias}, qk_norm={config.qk_norm}, "
            f"sliding_window={config.sliding_window} has no transformers class to be saved as"
        )
    rope = {"rope_type": "default", "rope_theta": config.rope_theta, **(config.rope_scaling or {})}
    return {
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "hidden_size": config.n_embd,
        "head_dim": config.head_dim,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        "hidden_act": "silu",
        "rope_theta": config.rope_theta,
        "rope_parameters": rope,
        "rope_scaling": config.rope_scaling,  # transformers 5 and 4 spellings
        "sliding_window": config.sliding_window,
        **HF_FAMILY_KEYS[config.arch],
        **common,
    }


# -------------------------------------------------------------------------------------------- GGUF


def gguf_config(path, fields: dict, tensors: dict) -> ModelConfig:
    """Our config from a GGUF's metadata (its architecture's keys, llama.cpp's names) and tensor shapes."""

    def meta(key, default=None):
        return fields[key].contents() if key in fields else default

    arch = meta("general.architecture")
    if arch not in GGUF_ARCHS:
        supported = ", ".join(GGUF_ARCHS)
        raise UserError(f"{path}: GGUF architecture '{arch}' is not supported; {supported} GGUF files load")

    def of(key, default=None):  # the architecture's own metadata
        return meta(f"{arch}.{key}", default)

    required = ["block_count", "attention.head_count", "embedding_length", "feed_forward_length",
                "context_length", "attention.layer_norm_rms_epsilon"]  # fmt: skip
    if missing := [f"{arch}.{k}" for k in required if f"{arch}.{k}" not in fields]:
        raise UserError(f"{path} lacks GGUF metadata {missing}; re-convert it with a current llama.cpp")
    n_head, n_embd = of("attention.head_count"), of("embedding_length")
    head_dim = of("attention.key_length", n_embd // n_head)
    scaling, theta = str(of("rope.scaling.type", "none")), of("rope.freq_base", 10000.0)
    if scaling not in ("none", "linear") or of("rope.dimension_count", head_dim) != head_dim:
        raise UserError(
            f"{path}: RoPE with scaling type {scaling!r} or over part of each head is not supported"
        )
    rope_scaling = (
        {"rope_type": "linear", "factor": of("rope.scaling.factor")} if scaling == "linear" else None
    )
    if "rope_freqs.weight" in tensors:
        rope_scaling = llama3_scaling_of(
            path, read_gguf_tensor(tensors["rope_freqs.weight"], path), head_dim, theta
        )
    return ModelConfig(
        arch=arch,
        n_layer=of("block_count"),
        n_head=n_head,
        n_kv_head=of("attention.head_count_kv", n_head),
        n_embd=n_embd,
        head_dim=head_dim,
        intermediate_size=of("feed_forward_length"),
        vocab_size=int(tensors["token_embd.weight"].shape[-1]),
        block_size=of("context_length"),
        tie_embeddings="output.weight" not in tensors,
        norm_eps=round_float32(of("attention.layer_norm_rms_epsilon")),
        rope_theta=theta,
        rope_scaling=rope_scaling,
        bos_token_id=meta("tokenizer.ggml.bos_token_id"),
        eos_token_id=meta("tokenizer.ggml.eos_token_id"),
    )


def round_float32(x: float) -> float:
    """A float32 read from a file as the decimal it was written from: 9.99999975e-06 -> 1e-05."""
    return float(f"{x:.6g}")


def llama3_scaling_of(path, freq_factors: torch.Tensor, head_dim: int, theta: float) -> dict:
    """llama.cpp stores Llama 3.x's RoPE rescaling as per-frequency divisors (rope_freqs). Every Llama 3.x
    uses low_freq_factor 1, high_freq_factor 4 and an original context of 8192: accepted when they give these
    divisors."""
    scaling = {
        "rope_type": "llama3",
        "factor": freq_factors.max().item(),
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    inv_freq = rope_frequencies(head_dim, theta)
    if freq_factors.shape != inv_freq.shape or not torch.allclose(
        inv_freq / rescale_rope(inv_freq, scaling), freq_factors.float(), rtol=1e-4
    ):
        raise UserError(
            f"{path}: its rope_freqs are not Llama 3's RoPE scaling; load the model's HF folder instead"
        )
    return scaling
