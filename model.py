"""GPT-2 and LLaMA in one file, plus the weight I/O every other script uses.

Names follow nanoGPT: wte, wpe, h.{i}.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_f, lm_head.
LLaMA reuses them: ln_* are RMSNorms, attn.c_attn is the fused [q; k; v] projection (k, v with n_kv_head heads)
and mlp.c_fc the fused [gate; up] projection of SwiGLU.

Checkpoints are read through `open_weights(path)`: a lazy view of a project checkpoint, a HF folder or a GGUF
file under these names (declarative name tables below), so `load_model` and inherit.py read only what they need.
"""
import contextlib
import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from util import UserError, atomic_write


# ----------------------------------------------------------------------------------------------- config

@dataclass
class ModelConfig:
    arch: str = "gpt2"                    # "gpt2" or "llama"
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_kv_head: int | None = None          # grouped-query attention; None -> n_head
    intermediate_size: int | None = None  # MLP width; None -> 4 * n_embd (gpt2) or LLaMA's 2/3 * 4 * n_embd rounded
    vocab_size: int = 50257               # the tokenizer's; the embedding is padded to a multiple of 64
    block_size: int = 1024                # longest sequence (learned positions for gpt2, RoPE table for llama)
    bias: bool | None = None              # biases in Linear/LayerNorm; None -> True for gpt2, False for llama
    tie_embeddings: bool | None = None    # lm_head shares wte; None -> True for gpt2, False for llama
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0           # llama only
    dropout: float = 0.0
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self):
        if self.arch not in ("gpt2", "llama"):
            raise UserError(f"unknown arch '{self.arch}'; use 'gpt2' or 'llama'")
        gpt2 = self.arch == "gpt2"
        self.n_kv_head = self.n_kv_head or self.n_head
        self.bias = gpt2 if self.bias is None else self.bias
        self.tie_embeddings = gpt2 if self.tie_embeddings is None else self.tie_embeddings
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.n_embd if gpt2 else 256 * math.ceil(8 * self.n_embd / 3 / 256)
        if self.n_layer < 1 or self.n_embd % self.n_head or self.n_head % self.n_kv_head:
            raise UserError(f"bad shape: n_layer={self.n_layer} must be >= 1, n_embd={self.n_embd} divisible by "
                            f"n_head={self.n_head}, n_head divisible by n_kv_head={self.n_kv_head}")
        if not gpt2 and (self.bias or self.head_dim % 2):
            raise UserError("llama needs bias=False and an even head_dim (n_embd // n_head)")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def padded_vocab_size(self) -> int:  # multiples of 64 keep the head's matmul on fast tensor-core shapes
        return 64 * math.ceil(self.vocab_size / 64)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        if unknown := set(d) - known:
            raise UserError(f"unknown model config keys {sorted(unknown)}; valid keys: {sorted(known)}")
        return cls(**d)


# ----------------------------------------------------------------------------------------------- model

class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):  # normalise in float32 like the reference, then scale in the input dtype
        return self.weight * F.rms_norm(x.float(), x.shape[-1:], eps=self.eps).type_as(x)


def make_norm(config: ModelConfig) -> nn.Module:
    if config.arch == "gpt2":
        return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)
    return RMSNorm(config.n_embd, config.norm_eps)


def rope_tables(head_dim: int, length: int, theta: float):
    """cos/sin tables (length, head_dim) for rotary embeddings in the HF "rotate-half" layout."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):  # x: (B, n_head, T, head_dim); pairs are (i, i + head_dim/2)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.c_attn = nn.Linear(config.n_embd, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=config.bias)
        self.c_proj = nn.Linear(self.n_head * self.head_dim, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, rope=None, mask=None):  # mask (B, 1, T, T) bool replaces the causal mask when given
        B, T, _ = x.shape
        sizes = [self.n_head * self.head_dim, self.n_kv_head * self.head_dim, self.n_kv_head * self.head_dim]
        q, k, v = self.c_attn(x).split(sizes, dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin).type_as(v), apply_rope(k, cos, sin).type_as(v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=self.n_kv_head
                                           != self.n_head, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gated = config.arch == "llama"  # SwiGLU: c_fc holds [gate; up]
        width = config.intermediate_size
        self.c_fc = nn.Linear(config.n_embd, (2 if self.gated else 1) * width, bias=config.bias)
        self.c_proj = nn.Linear(width, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.c_fc(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate="tanh")  # GPT-2's "gelu_new"
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1, self.attn = make_norm(config), CausalSelfAttention(config)
        self.ln_2, self.mlp = make_norm(config), MLP(config)

    def forward(self, x, rope=None, mask=None):
        x = x + self.attn(self.ln_1(x), rope, mask)
        return x + self.mlp(self.ln_2(x))


class CrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of (N, padded V) 16-bit logits against N targets (-100 = ignored) over the first
    vocab_size columns: F.cross_entropy's float32 math, but backward rebuilds softmax - one_hot from the 16-bit
    logits and each row's float32 log-sum-exp. F.cross_entropy keeps an (N, V) float32 log-softmax for its
    backward instead: under torch.compile that cost ~3x the memory traffic, 12% of a GPT-2 124M step (issue 8)."""

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


class GPT(nn.Module):
    """A decoder-only transformer: GPT-2 (learned positions, LayerNorm, GELU) or LLaMA (RoPE, RMSNorm, SwiGLU, GQA)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.arch == "gpt2" else None
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.register_buffer("rope_cos", None, persistent=False)
        self.register_buffer("rope_sin", None, persistent=False)
        self.init_buffers()
        self.init_weights()

    def init_buffers(self):
        """(Re)compute the RoPE tables; needed again after a model built on the meta device is materialised."""
        if self.config.arch == "llama":
            device = self.wte.weight.device
            cos, sin = rope_tables(self.config.head_dim, self.config.block_size, self.config.rope_theta)
            self.rope_cos, self.rope_sin = cos.to(device), sin.to(device)

    @torch.no_grad()
    def init_weights(self, modules: tuple[str, ...] = ("",)):
        """Fresh GPT-2-style init of the named submodules (all by default): N(0, 0.02), residual projections
        N(0, 0.02 / sqrt(2 * n_layer)) as in the GPT-2 paper, zero biases, unit norm gains."""
        for name, m in self.named_modules():
            if not any(name == p or name.startswith(p + ".") or p == "" for p in modules):
                continue
            if isinstance(m, (nn.Linear, nn.Embedding)):
                std = 0.02 / math.sqrt(2 * self.config.n_layer) if name.endswith("c_proj") else 0.02
                nn.init.normal_(m.weight, mean=0.0, std=std)
            if isinstance(m, (nn.LayerNorm, RMSNorm)):
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def hidden_states(self, idx, pos=None, mask=None):
        """Final-norm hidden states (B, T, n_embd). By default token t sits at position t and sees tokens <= t;
        pos (B, T) and a bool mask (B, T, T) let one row hold several sequences that share a prefix (eval.py)."""
        T = idx.shape[1]
        if pos is None and T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size={self.config.block_size}")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device) if pos is None else pos)
        rope = None
        if self.rope_cos is not None:  # per-token tables (B, 1, T, head_dim) broadcast over heads when pos is given
            cos, sin = (self.rope_cos[:T], self.rope_sin[:T]) if pos is None else \
                (self.rope_cos[pos].unsqueeze(1), self.rope_sin[pos].unsqueeze(1))
            rope = (cos.to(x.dtype), sin.to(x.dtype))
        x = self.drop(x)
        mask = None if mask is None else mask.unsqueeze(1)
        for block in self.h:
            x = block(x, rope, mask)
        return self.ln_f(x)

    def forward(self, idx, targets=None):
        """Logits (B, T, vocab_size) for every position; with targets (-100 = ignore), only the mean loss: training
        never returns the (B, T, vocab) logits, so under torch.compile they live only inside the fused loss."""
        h = self.hidden_states(idx)
        return self.logits(h) if targets is None else self.loss(h, targets)

    def logits(self, h):
        logits = self.lm_head(h)  # padding rows exist for speed, never as predictions
        V = self.config.vocab_size
        return logits if self.config.padded_vocab_size == V else logits[..., :V]

    def loss(self, h, targets):  # its own method so train.py can compile the head and loss apart from the blocks
        logits = self.lm_head(h).flatten(0, 1)  # all padded columns: CrossEntropy masks them, no sliced copy
        return CrossEntropy.apply(logits, targets.flatten(), self.config.vocab_size)

    def num_params(self, matmul_only: bool = False) -> int:
        """All parameters, or only those in matrix multiplies (no position table, no untied embedding lookup)."""
        n = sum(p.numel() for p in self.parameters())
        if matmul_only:
            n -= self.wpe.weight.numel() if self.wpe is not None else 0
            n -= 0 if self.config.tie_embeddings else self.wte.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12 * n_layer * n_embd * T."""
        c, T = self.config, seq_len or self.config.block_size
        return 6 * self.num_params(matmul_only=True) + 12 * c.n_layer * c.n_head * c.head_dim * T

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 eos_token_id: int | None = None):
        """Append up to max_new_tokens to idx (B, T); temperature 0 is greedy. Stops early once every row hit eos."""
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.config.block_size:])[:, -1, :].float()
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                next_id = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            if eos_token_id is not None:
                next_id = next_id.masked_fill(done[:, None], eos_token_id)
                done |= next_id[:, 0] == eos_token_id
            idx = torch.cat((idx, next_id), dim=1)
            if done.all():
                break
        return idx


def unwrap(model: nn.Module) -> GPT:
    """The plain GPT inside DDP (.module) and torch.compile (._orig_mod) wrappers."""
    while isinstance(getattr(model, "module", None), nn.Module) or hasattr(model, "_orig_mod"):
        model = getattr(model, "_orig_mod", None) or model.module
    return model


def empty_model(config: ModelConfig, device="cpu", dtype=torch.float32) -> GPT:
    """A GPT whose parameters are allocated but not initialised (cheap): for loading weights into."""
    with torch.device("meta"):
        model = GPT(config)
    model = model.to_empty(device=device).to(dtype)
    if config.tie_embeddings:  # materialising can split a shared parameter in two
        model.lm_head.weight = model.wte.weight
    model.init_buffers()
    return model


# ----------------------------------------------------------------------------------------------- name tables
# Our module -> theirs; ".weight"/".bias" carry over. "{}" is the layer; a tuple is fused along dim 0 into ours.

GPT2_HF = {
    "wte": "transformer.wte", "wpe": "transformer.wpe", "ln_f": "transformer.ln_f", "lm_head": "lm_head",
    "h.{}.ln_1": "transformer.h.{}.ln_1", "h.{}.ln_2": "transformer.h.{}.ln_2",
    "h.{}.attn.c_attn": "transformer.h.{}.attn.c_attn", "h.{}.attn.c_proj": "transformer.h.{}.attn.c_proj",
    "h.{}.mlp.c_fc": "transformer.h.{}.mlp.c_fc", "h.{}.mlp.c_proj": "transformer.h.{}.mlp.c_proj",
}
GPT2_CONV1D = re.compile(r"\.(c_attn|c_proj|c_fc)\.weight$")  # HF GPT-2 stores these as (in, out): transpose

LLAMA_HF = {
    "wte": "model.embed_tokens", "ln_f": "model.norm", "lm_head": "lm_head",
    "h.{}.ln_1": "model.layers.{}.input_layernorm", "h.{}.ln_2": "model.layers.{}.post_attention_layernorm",
    "h.{}.attn.c_attn": ("model.layers.{}.self_attn.q_proj", "model.layers.{}.self_attn.k_proj",
                         "model.layers.{}.self_attn.v_proj"),
    "h.{}.attn.c_proj": "model.layers.{}.self_attn.o_proj",
    "h.{}.mlp.c_fc": ("model.layers.{}.mlp.gate_proj", "model.layers.{}.mlp.up_proj"),
    "h.{}.mlp.c_proj": "model.layers.{}.mlp.down_proj",
}

LLAMA_GGUF = {
    "wte": "token_embd", "ln_f": "output_norm", "lm_head": "output",
    "h.{}.ln_1": "blk.{}.attn_norm", "h.{}.ln_2": "blk.{}.ffn_norm",
    "h.{}.attn.c_attn": ("blk.{}.attn_q", "blk.{}.attn_k", "blk.{}.attn_v"), "h.{}.attn.c_proj": "blk.{}.attn_output",
    "h.{}.mlp.c_fc": ("blk.{}.ffn_gate", "blk.{}.ffn_up"), "h.{}.mlp.c_proj": "blk.{}.ffn_down",
}


def source_names(table: dict, name: str) -> list[str]:
    """The tensors of a checkpoint that make up our tensor `name`, e.g. 'h.3.mlp.c_fc.weight' -> [gate_3, up_3]."""
    module, kind = name.rsplit(".", 1)
    layer = re.match(r"h\.(\d+)\.", module)
    sources = table[re.sub(r"^h\.\d+\.", "h.{}.", module)]  # KeyError for a name the table does not map
    sources = sources if isinstance(sources, tuple) else (sources,)
    return [(s.format(layer.group(1)) if layer else s) + "." + kind for s in sources]


def fused_sizes(config: ModelConfig, name: str) -> list[int]:
    """Row counts of the pieces of a fused tensor of ours, in table order (for splitting on export)."""
    if name.endswith("attn.c_attn.weight"):
        return [config.n_head * config.head_dim] + [config.n_kv_head * config.head_dim] * 2
    return [config.intermediate_size] * 2  # mlp.c_fc = [gate; up]


def unpermute_rotary(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """GGUF stores each head's Q/K rows with rotary pairs interleaved; back to the rotate-half row order."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


# ----------------------------------------------------------------------------------------------- reading

class Weights:
    """A checkpoint opened lazily under our tensor names: `config`, `get(name)`, `sources(name)`. `read(src)` fetches
    one tensor by the file's own name; `fix(src, t)` undoes the format's layout (transposes, row permutations)."""

    def __init__(self, path, config: ModelConfig, read, table: dict | None = None, fix=None, file_names=()):
        self.path, self.config, self.table = str(path), config, table
        self._read, self._fix, self.file_names = read, fix or (lambda src, t: t), set(file_names)

    def sources(self, name: str) -> list[str]:
        return [name] if self.table is None else source_names(self.table, name)

    def get(self, name: str) -> torch.Tensor:
        parts = [self._fix(src, self._read(src)) for src in self.sources(name)]
        t = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        if name in ("wte.weight", "lm_head.weight") and t.shape[0] == self.config.vocab_size:
            t = F.pad(t, (0, 0, 0, self.config.padded_vocab_size - t.shape[0]))  # zero rows for the padding
        return t


def _missing(path, name):
    raise UserError(f"{path} has no tensor '{name}': the checkpoint is incomplete or not of the architecture "
                    f"its config says; re-export it")


def safe_torch_load(path):
    """torch.load that never unpickles code: plain tensors and containers only."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} cannot be loaded safely ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                        f"re-save it as safetensors or as a state dict of plain tensors") from None


def _open_project(path: Path) -> Weights:
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise UserError(f"{path} is not an inheritune checkpoint (no 'config'/'model'); "
                        f"pass a HF model folder or a .gguf file instead")
    state = ckpt["model"]
    read = lambda name: state[name] if name in state else _missing(path, name)
    weights = Weights(path, ModelConfig.from_dict(ckpt["config"]), read, file_names=state)
    weights.meta = {k: v for k, v in ckpt.items() if k not in ("config", "model")}
    return weights


def config_from_hf(hf: dict) -> ModelConfig:
    """Our config from a HF config.json (GPT2LMHeadModel or LlamaForCausalLM)."""
    kind = hf.get("model_type")
    if kind is None or "vocab_size" not in hf:
        raise UserError("config.json has no model_type/vocab_size: not a HF model folder")
    common = dict(vocab_size=hf["vocab_size"], bos_token_id=hf.get("bos_token_id"), eos_token_id=hf.get("eos_token_id"))
    if kind == "gpt2":
        if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise UserError(f"GPT-2 activation '{hf['activation_function']}' is not supported (only gelu_new)")
        if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("scale_attn_weights") is False:
            raise UserError("GPT-2 with non-standard attention scaling is not supported")
        return ModelConfig(arch="gpt2", n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
                           intermediate_size=hf.get("n_inner") or 4 * hf["n_embd"], block_size=hf["n_positions"],
                           bias=True, tie_embeddings=hf.get("tie_word_embeddings", True),
                           norm_eps=hf.get("layer_norm_epsilon", 1e-5), **common)
    if kind == "llama":
        rope = hf.get("rope_parameters") or {}  # transformers >= 5 nests rope settings here
        scaling = hf.get("rope_scaling") or ({} if rope.get("rope_type", "default") == "default" else rope)
        if scaling or hf.get("attention_bias") or hf.get("mlp_bias") or hf.get("hidden_act", "silu") != "silu":
            raise UserError("LLaMA with rope scaling, biases or a non-SiLU activation is not supported")
        n_head = hf["num_attention_heads"]
        if hf.get("head_dim") not in (None, hf["hidden_size"] // n_head):
            raise UserError(f"LLaMA with head_dim={hf['head_dim']} != hidden_size / heads is not supported")
        return ModelConfig(arch="llama", n_layer=hf["num_hidden_layers"], n_head=n_head, n_embd=hf["hidden_size"],
                           n_kv_head=hf.get("num_key_value_heads") or n_head,
                           intermediate_size=hf["intermediate_size"], block_size=hf["max_position_embeddings"],
                           bias=False, tie_embeddings=hf.get("tie_word_embeddings", False),
                           norm_eps=hf.get("rms_norm_eps", 1e-6),
                           rope_theta=hf.get("rope_theta") or rope.get("rope_theta", 10000.0), **common)
    raise UserError(f"model_type '{kind}' is not supported; inheritune reads gpt2 and llama checkpoints")


def _hf_reader(folder: Path):
    """read(name) over a HF folder's safetensors (single or sharded) or pytorch_model*.bin, opening files lazily."""
    index = [folder / n for n in ("model.safetensors.index.json", "pytorch_model.bin.index.json") if (folder / n).exists()]
    single = [n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).exists()]
    if not index and not single:
        raise UserError(f"{folder} has config.json but no model.safetensors or pytorch_model.bin")
    loaded_bins = {}

    def open_file(file_name):  # sharded checkpoints: only the shards holding requested tensors are opened
        if not (folder / file_name).exists():
            raise UserError(f"{folder / file_name} is missing (named by {index[0].name}); get the whole checkpoint")
        if file_name.endswith(".safetensors"):  # memory-mapped, and unmapped after each read to keep RSS low
            from safetensors import safe_open
            return safe_open(str(folder / file_name), framework="pt")
        if file_name not in loaded_bins:
            loaded_bins[file_name] = safe_torch_load(folder / file_name)
        return contextlib.nullcontext(loaded_bins[file_name])

    if index:
        weight_map = json.loads(index[0].read_text())["weight_map"]
    else:
        with open_file(single[0]) as f:
            weight_map = dict.fromkeys(f.keys(), single[0])

    def read(name):
        if name not in weight_map:
            _missing(folder, name)
        with open_file(weight_map[name]) as f:
            return f.get_tensor(name) if hasattr(f, "get_tensor") else f[name]

    return read, weight_map


def _open_hf(folder: Path) -> Weights:
    try:
        hf = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{folder}/config.json is unreadable ({e}); is this a HF model folder?") from None
    config = config_from_hf(hf)
    read, names = _hf_reader(folder)
    if config.arch == "llama":
        return Weights(folder, config, read, LLAMA_HF, file_names=names)
    table = GPT2_HF
    if "transformer.wte.weight" not in names and "wte.weight" in names:  # GPT2Model-style names (e.g. OpenAI's)
        table = {k: v.removeprefix("transformer.") for k, v in GPT2_HF.items()}
    fix = lambda src, t: t.t() if GPT2_CONV1D.search(src) else t
    return Weights(folder, config, read, table, fix, file_names=names)


def _open_gguf(path: Path) -> Weights:
    import gguf
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:
        raise UserError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e})") from None
    meta = lambda key, default=None: reader.fields[key].contents() if key in reader.fields else default
    arch = meta("general.architecture")
    if arch != "llama":
        raise UserError(f"{path}: GGUF architecture '{arch}' is not supported; only 'llama' GGUF files load")
    tensors = {t.name: t for t in reader.tensors}
    required = [f"llama.{k}" for k in ("block_count", "attention.head_count", "embedding_length", "feed_forward_length",
                                        "context_length", "attention.layer_norm_rms_epsilon")]
    if missing := [k for k in required if k not in reader.fields]:
        raise UserError(f"{path} lacks GGUF metadata {missing}; re-convert it with a current llama.cpp")
    scaling = meta("llama.rope.scaling.type", "none")
    if "rope_freqs.weight" in tensors or scaling not in ("none", b"none"):
        raise UserError(f"{path} uses RoPE scaling (Llama-3.1-style rope_freqs or {scaling!r}), which is not supported")
    n_head = meta("llama.attention.head_count")
    n_kv_head = meta("llama.attention.head_count_kv", n_head)
    config = ModelConfig(
        arch="llama", n_layer=meta("llama.block_count"), n_head=n_head, n_kv_head=n_kv_head,
        n_embd=meta("llama.embedding_length"), intermediate_size=meta("llama.feed_forward_length"),
        vocab_size=int(tensors["token_embd.weight"].shape[-1]), block_size=meta("llama.context_length"),
        tie_embeddings="output.weight" not in tensors, norm_eps=meta("llama.attention.layer_norm_rms_epsilon"),
        rope_theta=meta("llama.rope.freq_base", 10000.0), bos_token_id=meta("tokenizer.ggml.bos_token_id"),
        eos_token_id=meta("tokenizer.ggml.eos_token_id"))
    config.norm_eps = float(f"{config.norm_eps:.6g}")  # stored as float32: 9.99999975e-06 -> 1e-05

    def read(name):
        if name not in tensors:
            _missing(path, name)
        t = tensors[name]
        return torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).reshape(t.shape[::-1].tolist()).copy())

    def fix(src, t):
        if src.endswith("attn_q.weight"):
            return unpermute_rotary(t, n_head)
        return unpermute_rotary(t, n_kv_head) if src.endswith("attn_k.weight") else t

    return Weights(path, config, read, LLAMA_GGUF, fix, file_names=tensors)


def open_weights(path) -> Weights:
    """Lazy view of any checkpoint we read: a project .pt (or a folder holding ckpt.pt), a HF folder, a .gguf."""
    path = Path(path)
    if path.is_dir():
        if (path / "config.json").exists():
            return _open_hf(path)
        if (path / "ckpt.pt").exists():
            return _open_project(path / "ckpt.pt")
        raise UserError(f"{path} holds neither config.json (HF model) nor ckpt.pt (inheritune run)")
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; pass a project checkpoint (.pt), a HF model folder "
                        f"or a .gguf file")
    if path.suffix == ".gguf":
        return _open_gguf(path)
    return _open_project(path)


def load_model(path, device="cpu", dtype=torch.float32) -> GPT:
    """Any checkpoint `open_weights` reads -> a GPT in eval mode. Every tensor is checked by name and shape."""
    weights = open_weights(path)
    model = empty_model(weights.config, device, dtype)
    tied = weights.config.tie_embeddings  # a tied head is wte itself: not read
    load_tensors(model, weights, [n for n in model.state_dict() if not (tied and n == "lm_head.weight")])
    return model.eval()


def load_tensors(model: GPT, weights: Weights, names) -> None:
    """model[name] = weights[source] for each name (a list: same name) or name -> source (a dict), shape-checked."""
    params = dict(model.state_dict(keep_vars=True))
    with torch.no_grad():
        for name, source in (names if isinstance(names, dict) else {n: n for n in names}).items():
            t = weights.get(source)
            if t.shape != params[name].shape:
                raise UserError(f"{weights.path}: tensor {'+'.join(weights.sources(source))} has shape "
                                f"{tuple(t.shape)}, expected {tuple(params[name].shape)} for {name}")
            params[name].copy_(t)


# ----------------------------------------------------------------------------------------------- writing

def save_checkpoint(path, model: nn.Module, **extra) -> None:
    """A project checkpoint: {'config', 'model' (plain state dict, no wrapper prefixes), **extra}, written atomically."""
    model = unwrap(model)
    obj = {"config": model.config.to_dict(), "model": model.state_dict(), **extra}
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def hf_config(config: ModelConfig) -> dict:
    """The config.json transformers needs to load our weights as GPT2LMHeadModel / LlamaForCausalLM."""
    common = {"vocab_size": config.vocab_size, "tie_word_embeddings": config.tie_embeddings,
              "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}
    if config.arch == "gpt2":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_layer": config.n_layer,
                "n_head": config.n_head, "n_embd": config.n_embd, "n_inner": config.intermediate_size,
                "n_positions": config.block_size, "activation_function": "gelu_new",
                "layer_norm_epsilon": config.norm_eps, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
                **common}
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": config.n_layer,
            "num_attention_heads": config.n_head, "num_key_value_heads": config.n_kv_head,
            "hidden_size": config.n_embd, "head_dim": config.head_dim, "intermediate_size": config.intermediate_size,
            "max_position_embeddings": config.block_size, "rms_norm_eps": config.norm_eps, "hidden_act": "silu",
            "rope_theta": config.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
            "attention_bias": False, "mlp_bias": False, **common}


def save_hf(model: nn.Module, out_dir) -> None:
    """Write config.json + model.safetensors that transformers' from_pretrained loads as the matching HF class."""
    from safetensors.torch import save_file
    model = unwrap(model)
    config, state = model.config, model.state_dict()
    table = GPT2_HF if config.arch == "gpt2" else LLAMA_HF
    out = {}
    for name, t in state.items():
        if name == "lm_head.weight" and config.tie_embeddings:
            continue
        t = t.detach().float().cpu()
        if name in ("wte.weight", "lm_head.weight"):
            t = t[: config.vocab_size]
        sources = source_names(table, name)
        pieces = t.split(fused_sizes(config, name)) if len(sources) > 1 else [t]
        for src, piece in zip(sources, pieces):
            out[src] = (piece.t() if config.arch == "gpt2" and GPT2_CONV1D.search(src) else piece).contiguous()
    if config.arch == "gpt2":  # HF GPT-2 always has biases: a bias-free model is the same with zero biases
        for name, m in model.named_modules():
            if isinstance(m, (nn.Linear, nn.LayerNorm)) and m.bias is None and name != "lm_head":
                out[source_names(table, name + ".bias")[0]] = torch.zeros(m.weight.shape[0])
    out_dir = Path(out_dir)
    atomic_write(out_dir / "model.safetensors", lambda tmp: save_file(out, tmp, metadata={"format": "pt"}))
    atomic_write(out_dir / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(hf_config(config), indent=2)))
