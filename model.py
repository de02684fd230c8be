"""GPT-2 and the LLaMA-shaped families (LLaMA 1-3, Mistral, Qwen2/2.5, Qwen3) in one file.

Names follow nanoGPT: wte, wpe, h.{i}.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_f,
lm_head. The LLaMA shape reuses them: ln_* are RMSNorms, attn.c_attn is the fused [q; k; v] projection (k, v
with n_kv_head heads) and mlp.c_fc the fused [gate; up] projection of SwiGLU. The families differ only in
fields of ModelConfig: q/k/v biases (Qwen2), RMSNorm on each head of q and k (Qwen3), a head size of its own
(Qwen3), RoPE rescaled for long contexts (Llama 3.x), a sliding attention window (Mistral). Reading and
writing checkpoints (project .pt, HF folders, GGUF) is weights.py's job."""

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from inheritune.losses import CrossEntropy, DistillationLoss
from inheritune.util import UserError

# ------------------------------------------------------------------------------------------- config

ARCHS = ("gpt2", "llama", "mistral", "qwen2", "qwen3")  # every family but gpt2 is LLaMA-shaped
ROPE_SCALING_KEYS = {
    "linear": {"factor"},
    "llama3": {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"},
}


@dataclass
class ModelConfig:
    # family (defaults, HF class): gpt2 | llama | mistral | qwen2 | qwen3
    arch: str = "gpt2"
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_kv_head: int | None = None  # grouped-query attention; None -> n_head
    head_dim: int | None = None  # None -> n_embd // n_head (Qwen3 chooses its own)
    # MLP width; None -> 4 * n_embd (gpt2) or LLaMA's 2/3 * 4 * n_embd rounded
    intermediate_size: int | None = None
    vocab_size: int = 50257  # the tokenizer's; the embedding is padded to a multiple of 64
    # longest sequence (learned positions for gpt2, RoPE table otherwise)
    block_size: int = 1024
    bias: bool | None = None  # biases in every Linear and norm; None -> True for gpt2, else False
    qkv_bias: bool | None = None  # biases on the q, k, v projections only; None -> True for qwen2
    # RMSNorm over each head of q and k, before RoPE; None -> True for qwen3
    qk_norm: bool | None = None
    tie_embeddings: bool | None = None  # lm_head shares wte; None -> True for gpt2, False otherwise
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0  # RoPE base (all but gpt2)
    # {"rope_type": "linear", "factor": f} or Llama 3's "llama3" settings
    rope_scaling: dict | None = None
    sliding_window: int | None = None  # a query sees only the last sliding_window positions (Mistral v0.1)
    dropout: float = 0.0
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise UserError(f"unknown arch '{self.arch}'; use one of {', '.join(ARCHS)}")
        gpt2 = self.arch == "gpt2"
        self.n_kv_head = self.n_kv_head or self.n_head
        self.bias = gpt2 if self.bias is None else self.bias
        self.qkv_bias = self.bias or self.arch == "qwen2" if self.qkv_bias is None else self.qkv_bias
        self.qk_norm = self.arch == "qwen3" if self.qk_norm is None else self.qk_norm
        self.tie_embeddings = gpt2 if self.tie_embeddings is None else self.tie_embeddings
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.n_embd if gpt2 else 256 * math.ceil(8 * self.n_embd / 3 / 256)
        if (
            self.n_layer < 1
            or (self.head_dim is None and self.n_embd % self.n_head)
            or self.n_head % self.n_kv_head
        ):
            raise UserError(
                f"bad shape: n_layer={self.n_layer} must be >= 1, n_embd={self.n_embd} divisible by "
                f"n_head={self.n_head} (or head_dim set), n_head divisible by n_kv_head={self.n_kv_head}"
            )
        self.head_dim = self.head_dim or self.n_embd // self.n_head
        if gpt2 and (
            self.qkv_bias != self.bias
            or self.qk_norm
            or self.rope_scaling
            or self.sliding_window
            or self.head_dim * self.n_head != self.n_embd
            or self.n_kv_head != self.n_head
        ):
            raise UserError(
                "gpt2 has no qkv_bias apart from bias, qk_norm, rope_scaling, sliding_window, head_dim "
                "other than n_embd / n_head or n_kv_head; use a LLaMA-shaped arch (llama, mistral, qwen2, "
                "qwen3)"
            )
        if not gpt2 and (self.bias or self.head_dim % 2):
            raise UserError(f"{self.arch} needs bias=False and an even head_dim")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type")
            values = [self.rope_scaling.get(k) for k in ROPE_SCALING_KEYS.get(kind, ())]
            if kind not in ROPE_SCALING_KEYS or not all(
                isinstance(v, (int, float)) and v > 0 for v in values
            ):
                raise UserError(
                    f"rope_scaling {self.rope_scaling} is not supported: rope_type linear (with factor) "
                    f"or llama3 (with {', '.join(sorted(ROPE_SCALING_KEYS['llama3']))}), all > 0"
                )

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


# -------------------------------------------------------------------------------------------- model


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


def rope_tables(head_dim: int, length: int, theta: float, scaling: dict | None = None):
    """cos/sin tables (length, head_dim) for rotary embeddings in the HF "rotate-half" layout."""
    inv_freq = rope_frequencies(head_dim, theta)
    if scaling is not None:
        inv_freq = rescale_rope(inv_freq, scaling)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def rope_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """RoPE's inverse frequencies theta^(-2i / head_dim), computed as transformers does."""
    return 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)


def rescale_rope(inv_freq, scaling: dict):
    """Long-context RoPE: linear divides every frequency by factor; Llama 3's divides the low frequencies
    (wavelength beyond original_max_position_embeddings / low_freq_factor), keeps the high ones (below ... /
    high_freq_factor) and ramps smoothly between, as transformers computes it."""
    if scaling["rope_type"] == "linear":
        return inv_freq / scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    wavelength = 2 * math.pi / inv_freq
    smooth = ((scaling["original_max_position_embeddings"] / wavelength - low) / (high - low)).clamp(0, 1)
    return (1 - smooth) * inv_freq / scaling["factor"] + smooth * inv_freq


def apply_rope(x, cos, sin):  # x: (B, n_head, T, head_dim); pairs are (i, i + head_dim/2)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.c_attn = nn.Linear(
            config.n_embd, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=config.qkv_bias
        )
        self.c_proj = nn.Linear(self.n_head * self.head_dim, config.n_embd, bias=config.bias)
        if config.qk_norm:
            self.q_norm, self.k_norm = (
                RMSNorm(self.head_dim, config.norm_eps),
                RMSNorm(self.head_dim, config.norm_eps),
            )
        self.qk_norm = config.qk_norm
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def qkv(self, x, rope=None):
        """Queries (B, n_head, T, head_dim), keys and values (B, n_kv_head, T, head_dim), RoPE applied."""
        B, T, _ = x.shape
        sizes = [self.n_head * self.head_dim, self.n_kv_head * self.head_dim, self.n_kv_head * self.head_dim]
        q, k, v = self.c_attn(x).split(sizes, dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim)
        k = k.view(B, T, self.n_kv_head, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin).type_as(v), apply_rope(k, cos, sin).type_as(v)
        return q, k, v

    def forward(self, x, rope=None, mask=None):  # mask (B, 1, T, T) bool replaces the causal mask when given
        B, T, _ = x.shape
        q, k, v = self.qkv(x, rope)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None,
            enable_gqa=self.n_kv_head != self.n_head,
            dropout_p=self.dropout if self.training else 0.0,
        )
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gated = config.arch != "gpt2"  # SwiGLU: c_fc holds [gate; up]
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


class GPT(nn.Module):
    """A decoder-only transformer: GPT-2 (learned positions, LayerNorm, GELU) or LLaMA-shaped (RoPE, RMSNorm,
    SwiGLU, GQA)."""

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
        """(Re)compute the RoPE tables; needed again after a model built on the meta device is
        materialised."""
        c = self.config
        if c.arch != "gpt2":
            device = self.wte.weight.device
            cos, sin = rope_tables(c.head_dim, c.block_size, c.rope_theta, c.rope_scaling)
            self.rope_cos, self.rope_sin = cos.to(device), sin.to(device)

    def crop_block_size(self, block_size: int) -> None:
        """Train or evaluate with a shorter context than the model was made with (drop the extra
        positions)."""
        if block_size > self.config.block_size:
            raise UserError(f"block_size={block_size} is longer than the model's {self.config.block_size}")
        if block_size < self.config.block_size:
            # a config of its own: the one the model was built from may be shared (an opened reference's)
            self.config = replace(self.config, block_size=block_size)
            if self.wpe is not None:
                self.wpe.weight = nn.Parameter(self.wpe.weight[:block_size].detach().clone())
            self.init_buffers()

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
        """Final-norm hidden states (B, T, n_embd). By default token t sits at position t and sees tokens <=
        t; pos (B, T) and a bool mask (B, T, T) let one row hold several sequences that share a prefix
        (eval.py)."""
        x, rope, mask = self.block_inputs(idx, pos, mask)
        for block in self.h:
            x = block(x, rope, mask)
        return self.ln_f(x)

    def block_inputs(self, idx, pos=None, mask=None):
        """What the first block takes: embedded tokens, RoPE tables, and the attention mask (None: causal)."""
        T = idx.shape[1]
        if pos is None and T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size={self.config.block_size}")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device) if pos is None else pos)
        rope = None
        # per-token tables (B, 1, T, head_dim) broadcast over heads when pos is given
        if self.rope_cos is not None:
            cos, sin = (
                (self.rope_cos[:T], self.rope_sin[:T])
                if pos is None
                else (self.rope_cos[pos].unsqueeze(1), self.rope_sin[pos].unsqueeze(1))
            )
            rope = (cos.to(x.dtype), sin.to(x.dtype))
        window = self.config.sliding_window
        # as transformers: query q sees the keys k with q - window < k <= q
        if window is not None and T > window:
            p = torch.arange(T, device=idx.device) if pos is None else pos
            near = p[..., :, None] - p[..., None, :] < window
            mask = (
                near & torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
                if mask is None
                else mask & near
            )
        x = self.drop(x)
        return x, rope, None if mask is None else mask.reshape(-1, 1, T, T)

    def forward(self, idx, targets=None, teacher_logits=None, kd_ratio=0.0, kd_temperature=1.0):
        """Logits (B, T, vocab_size) for every position; with targets (-100 = ignore), only the mean loss:
        training never returns the (B, T, vocab) logits, so under torch.compile they live only inside the
        fused loss. With teacher_logits (B * T, padded V) too, [loss, ce, kd] of distillation from them."""
        h = self.hidden_states(idx)
        if targets is None:
            return self.logits(h)
        if teacher_logits is None:
            return self.loss(h, targets)
        return self.distillation_loss(h, targets, teacher_logits, kd_ratio, kd_temperature)

    def logits(self, h):
        logits = self.lm_head(h)  # padding rows exist for speed, never as predictions
        V = self.config.vocab_size
        return logits if self.config.padded_vocab_size == V else logits[..., :V]

    # its own method so train.py can compile the head and loss apart from the blocks
    def loss(self, h, targets):
        logits = self.lm_head(h).flatten(0, 1)  # all padded columns: CrossEntropy masks them, no sliced copy
        return CrossEntropy.apply(logits, targets.flatten(), self.config.vocab_size)

    def distillation_loss(self, h, targets, teacher_logits, kd_ratio: float, kd_temperature: float):
        logits = self.lm_head(h).flatten(0, 1)
        vocab = self.config.vocab_size
        return DistillationLoss.apply(
            logits, teacher_logits, targets.flatten(), vocab, kd_ratio, kd_temperature
        )

    def padded_logits(self, idx):
        """(B * T, padded V) logits, the padded columns included: what a distilling student takes from its
        teacher."""
        return self.lm_head(self.hidden_states(idx)).flatten(0, 1)

    def num_params(self, matmul_only: bool = False) -> int:
        """All parameters, or only those in matrix multiplies (no position table, no untied embedding
        lookup)."""
        n = sum(p.numel() for p in self.parameters())
        if matmul_only:
            n -= self.wpe.weight.numel() if self.wpe is not None else 0
            n -= 0 if self.config.tie_embeddings else self.wte.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12 * n_layer * n_embd * T."""
        c, T = self.config, seq_len or self.config.block_size
        return 6 * self.num_params(matmul_only=True) + 12 * c.n_layer * c.n_head * c.head_dim * T

    def training_memory(self, micro_batch: int, seq_len: int | None = None, shards: int = 1) -> dict:
        """Estimated bytes per GPU of a training step under bf16 autocast: float32 weights, gradients and
        AdamW's two moments (each divided by `shards` where they are sharded), and the activations one
        micro-batch keeps for backward. Per block and token: 18 n_embd + 4 ffn bytes for GPT-2 (Korthikanti et
        al.'s 34 n_embd at ffn = 4 n_embd, flash attention), 18 n_embd + 6 ffn for SwiGLU (gate, up and their
        product kept); plus the 16-bit logits. docs/PERFORMANCE.md compares it with measured peaks."""
        c, T = self.config, seq_len or self.config.block_size
        n, tokens = self.num_params(), micro_batch * T
        per_token = 18 * c.n_embd + (4 if c.arch == "gpt2" else 6) * c.intermediate_size
        return {
            "weights": 4 * n / shards,
            "gradients": 4 * n / shards,
            "optimizer": 8 * n / shards,
            "activations": c.n_layer * per_token * tokens + 2 * c.padded_vocab_size * tokens,
        }

    @torch.no_grad()
    def generate(
        self,
        idx,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        eos_token_id: int | None = None,
    ):
        """Append up to max_new_tokens to idx (B, T); temperature 0 is greedy. Stops early once every row hit
        eos."""
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.config.block_size :])[:, -1, :].float()
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
