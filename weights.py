"""Weight I/O: project checkpoints, HF folders (safetensors, sharded or not, and pytorch_model.bin) and GGUF
files, for GPT-2 and the LLaMA-shaped families (LLaMA 1-3, Mistral, Qwen2/2.5, Qwen3).

Every format is read through `open_weights(path)`: a lazy view of the checkpoint under model.py's tensor
names, through declarative name tables (ours -> theirs), so `load_model` and inherit.py read only the tensors
they need. `save_checkpoint` writes a project checkpoint and `save_hf` a folder transformers loads; both write
atomically. The configs of those formats translate to and from ours in formats.py."""

import functools
import hashlib
import json
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from formats import config_from_hf, gguf_config, hf_config
from inheritune.tensor_files import hf_tensor_reader, missing_tensor, read_gguf_tensor, safe_torch_load
from inheritune.tokenizer import load_tokenizer
from inheritune.util import UserError, atomic_write, resolve_hub_name
from model import (
    GPT,
    ModelConfig,
    empty_model,
    unwrap,
)

# -------------------------------------------------------------------------------------- name tables
# Our module -> theirs; ".weight"/".bias" carry over. "{}" is the layer; a tuple is fused along dim 0 into
# ours.

GPT2_HF = {
    "wte": "transformer.wte",
    "wpe": "transformer.wpe",
    "ln_f": "transformer.ln_f",
    "lm_head": "lm_head",
    "h.{}.ln_1": "transformer.h.{}.ln_1",
    "h.{}.ln_2": "transformer.h.{}.ln_2",
    "h.{}.attn.c_attn": "transformer.h.{}.attn.c_attn",
    "h.{}.attn.c_proj": "transformer.h.{}.attn.c_proj",
    "h.{}.mlp.c_fc": "transformer.h.{}.mlp.c_fc",
    "h.{}.mlp.c_proj": "transformer.h.{}.mlp.c_proj",
}
GPT2_CONV1D = re.compile(r"\.(c_attn|c_proj|c_fc)\.weight$")  # HF GPT-2 stores these as (in, out): transpose

LLAMA_HF = {  # every LLaMA-shaped family: a model asks only for the tensors it has (Qwen3's q_norm/k_norm)
    "wte": "model.embed_tokens",
    "ln_f": "model.norm",
    "lm_head": "lm_head",
    "h.{}.ln_1": "model.layers.{}.input_layernorm",
    "h.{}.ln_2": "model.layers.{}.post_attention_layernorm",
    "h.{}.attn.c_attn": (
        "model.layers.{}.self_attn.q_proj",
        "model.layers.{}.self_attn.k_proj",
        "model.layers.{}.self_attn.v_proj",
    ),
    "h.{}.attn.c_proj": "model.layers.{}.self_attn.o_proj",
    "h.{}.attn.q_norm": "model.layers.{}.self_attn.q_norm",
    "h.{}.attn.k_norm": "model.layers.{}.self_attn.k_norm",
    "h.{}.mlp.c_fc": ("model.layers.{}.mlp.gate_proj", "model.layers.{}.mlp.up_proj"),
    "h.{}.mlp.c_proj": "model.layers.{}.mlp.down_proj",
}

LLAMA_GGUF = {
    "wte": "token_embd",
    "ln_f": "output_norm",
    "lm_head": "output",
    "h.{}.ln_1": "blk.{}.attn_norm",
    "h.{}.ln_2": "blk.{}.ffn_norm",
    "h.{}.attn.c_attn": ("blk.{}.attn_q", "blk.{}.attn_k", "blk.{}.attn_v"),
    "h.{}.attn.c_proj": "blk.{}.attn_output",
    "h.{}.attn.q_norm": "blk.{}.attn_q_norm",
    "h.{}.attn.k_norm": "blk.{}.attn_k_norm",
    "h.{}.mlp.c_fc": ("blk.{}.ffn_gate", "blk.{}.ffn_up"),
    "h.{}.mlp.c_proj": "blk.{}.ffn_down",
}


def source_names(table: dict, name: str) -> list[str]:
    """The tensors of a checkpoint that make up our tensor `name`, e.g. 'h.3.mlp.c_fc.weight' -> [gate_3,
    up_3]."""
    module, kind = name.rsplit(".", 1)
    layer = re.match(r"h\.(\d+)\.", module)
    sources = table[re.sub(r"^h\.\d+\.", "h.{}.", module)]  # KeyError for a name the table does not map
    sources = sources if isinstance(sources, tuple) else (sources,)
    return [(s.format(layer.group(1)) if layer else s) + "." + kind for s in sources]


def fused_sizes(config: ModelConfig, name: str) -> list[int]:
    """Row counts of the pieces of a fused tensor of ours, in table order (for splitting on export)."""
    if ".attn.c_attn." in name:
        return [config.n_head * config.head_dim] + [config.n_kv_head * config.head_dim] * 2
    return [config.intermediate_size] * 2  # mlp.c_fc = [gate; up]


def unpermute_rotary(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """GGUF stores each head's Q/K rows with rotary pairs interleaved; back to the rotate-half row order."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


# ------------------------------------------------------------------------------------------ reading


class Weights:
    """A checkpoint opened lazily under our tensor names: `config`, `get(name)`, `sources(name)`. `read(src)`
    fetches one tensor by the file's own name; `fix(src, t)` undoes the format's layout (transposes, row
    permutations)."""

    def __init__(
        self, path, config: ModelConfig, read, table: dict | None = None, fix=None, file_names=(), meta=None
    ):
        # meta: a run's records
        self.path, self.config, self.table, self.meta = str(path), config, table, meta or {}
        self._read, self._fix, self.file_names = read, fix or (lambda src, t: t), set(file_names)

    @functools.cached_property
    def tokenizer_hash(self) -> str | None:
        """The hash of the tokenizer this checkpoint expects (reference_tokenizer_hash), worked out once."""
        return reference_tokenizer_hash(self)

    def sources(self, name: str) -> list[str]:
        return [name] if self.table is None else source_names(self.table, name)

    def get(self, name: str) -> torch.Tensor:
        parts = [self._fix(src, self._read(src)) for src in self.sources(name)]
        t = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        if name in ("wte.weight", "lm_head.weight") and t.shape[0] == self.config.vocab_size:
            t = F.pad(t, (0, 0, 0, self.config.padded_vocab_size - t.shape[0]))  # zero rows for the padding
        return t


def _open_project(path: Path) -> Weights:
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise UserError(
            f"{path} is not an inheritune checkpoint (no 'config'/'model'); "
            f"pass a HF model folder or a .gguf file instead"
        )
    state = ckpt["model"]

    def read(name):
        return state[name] if name in state else missing_tensor(path, name)

    return Weights(
        path,
        ModelConfig.from_dict(ckpt["config"]),
        read,
        file_names=state,
        meta={k: v for k, v in ckpt.items() if k not in ("config", "model")},
    )


def _open_hf(folder: Path) -> Weights:
    try:
        hf = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{folder}/config.json is unreadable ({e}); is this a HF model folder?") from None
    try:
        config = config_from_hf(hf)
    except KeyError as e:  # a key every config of its model_type has
        raise UserError(
            f"{folder}/config.json has no {e.args[0]!r}, which a {hf.get('model_type')} config needs: export "
            f"the model again (save_pretrained) or complete the file"
        ) from None
    read, names = hf_tensor_reader(folder)
    if config.arch != "gpt2":
        return Weights(folder, config, read, LLAMA_HF, file_names=names)
    table = GPT2_HF
    # GPT2Model-style names (e.g. OpenAI's)
    if "transformer.wte.weight" not in names and "wte.weight" in names:
        table = {k: v.removeprefix("transformer.") for k, v in GPT2_HF.items()}

    def fix(src, t):
        return t.t() if GPT2_CONV1D.search(src) else t

    return Weights(folder, config, read, table, fix, file_names=names)


def _open_gguf(path: Path) -> Weights:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:
        raise UserError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e})") from None
    tensors = {t.name: t for t in reader.tensors}
    config = gguf_config(path, reader.fields, tensors)
    n_head, n_kv_head = config.n_head, config.n_kv_head

    def read(name):
        return read_gguf_tensor(tensors[name], path) if name in tensors else missing_tensor(path, name)

    def fix(src, t):  # llama.cpp interleaves the rotary pairs of LLaMA's Q/K rows only (Qwen's as they are)
        if config.arch == "llama" and src.endswith(("attn_q.weight", "attn_k.weight")):
            return unpermute_rotary(t, n_head if "attn_q" in src else n_kv_head)
        return t

    return Weights(path, config, read, LLAMA_GGUF, fix, file_names=tensors)


# Files people pass by mistake where a checkpoint goes (a config, a script): named as such, not "damaged".
NOT_CHECKPOINTS = (".py", ".json", ".jsonl", ".txt", ".md", ".yaml", ".yml", ".csv", ".parquet", ".sh")


def open_weights(path) -> Weights:
    """Lazy view of any checkpoint we read: a project .pt (or a folder holding ckpt.pt), a HF folder (or its
    hub name, through the HF cache), a .gguf."""
    path = Path(resolve_hub_name(str(path)))
    if path.is_dir():
        if (path / "config.json").exists():
            return _open_hf(path)
        if (path / "ckpt.pt").exists():
            return _open_project(path / "ckpt.pt")
        raise UserError(f"{path} holds neither config.json (HF model) nor ckpt.pt (inheritune run)")
    if not path.exists():
        raise UserError(
            f"{path}: no such file or folder; pass a project checkpoint (.pt), a HF model folder "
            f"or a .gguf file"
        )
    if path.suffix == ".gguf":
        return _open_gguf(path)
    if path.suffix == ".safetensors":
        raise UserError(f"{path}: a .safetensors file alone has no config; pass the HF folder that holds it")
    if path.suffix in NOT_CHECKPOINTS:
        raise UserError(
            f"{path} is not a checkpoint; pass a project checkpoint (.pt), a HF folder or a .gguf"
        )
    return _open_project(path)


def opened(source) -> Weights:
    """source as an open Weights: itself when it is one, else open_weights(source). Scripts open a reference
    once and pass the Weights along."""
    return source if isinstance(source, Weights) else open_weights(source)


def load_model(source, device="cpu", dtype=torch.float32) -> GPT:
    """Any checkpoint `open_weights` reads (or an opened Weights) -> a GPT in eval mode. Every tensor is
    checked by name and shape."""
    weights = opened(source)
    model = empty_model(weights.config, device, dtype)
    tied = weights.config.tie_embeddings  # a tied head is wte itself: not read
    load_tensors(model, weights, [n for n in model.state_dict() if not (tied and n == "lm_head.weight")])
    return model.eval()


def load_tensors(model: GPT, weights: Weights, names) -> None:
    """model[name] = weights[source] for each name (a list: same name) or name -> source (a dict),
    shape-checked."""
    params = dict(model.state_dict(keep_vars=True))
    with torch.no_grad():
        for name, source in (names if isinstance(names, dict) else {n: n for n in names}).items():
            t = weights.get(source)
            if t.shape != params[name].shape:
                raise UserError(
                    f"{weights.path}: tensor {'+'.join(weights.sources(source))} has shape "
                    f"{tuple(t.shape)}, expected {tuple(params[name].shape)} for {name}"
                )
            params[name].copy_(t)


def checkpoint_identity(path) -> dict:
    """Path, byte size and a fingerprint (sha256 over each file's name, size, first and last MiB) of a
    checkpoint: cheap even for many GB, and changes whenever the files do in practice."""
    path = Path(path)
    files = (
        sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if path.is_dir()
        else [path]
    )
    digest, total = hashlib.sha256(), 0
    for f in files:
        size = f.stat().st_size
        total += size
        digest.update(f"{f.name}:{size}:".encode())
        with open(f, "rb") as fh:
            digest.update(fh.read(1 << 20))
            fh.seek(max(size - (1 << 20), 0))
            digest.update(fh.read(1 << 20))
    return {"path": str(path.resolve()), "bytes": total, "fingerprint": digest.hexdigest()[:16]}


def tokenizer_spec_of(source) -> str:
    """The tokenizer a checkpoint (a path or an opened Weights) was made with, as a load_tokenizer spec;
    UserError if it cannot be told."""
    path = Path(source.path if isinstance(source, Weights) else resolve_hub_name(str(source)))
    if path.suffix == ".gguf":
        return str(path)
    weights = opened(source)
    if path.is_dir() and (path / "config.json").exists():  # HF folder
        if (path / "tokenizer.json").is_file():
            return str(path)
        if weights.config.arch == "gpt2" and weights.config.vocab_size == 50257:
            return "gpt2"
    meta = weights.meta
    data_tokenizer = ((meta.get("data") or {}).get("meta") or {}).get("tokenizer") or {}
    if "spec" in data_tokenizer:  # train.py: the tokenizer prepare_owt.py tokenized its data with
        return data_tokenizer["spec"]
    reference = (meta.get("inherit") or {}).get("reference", {}).get("path")
    if reference:  # inherit.py: the reference's tokenizer
        return tokenizer_spec_of(reference)
    raise UserError(
        f"{weights.path}: cannot tell which tokenizer it uses; pass --tokenizer (gpt2, a tokenizer.json, "
        f"a model folder or a .gguf)"
    )


def reference_tokenizer_hash(source) -> str | None:
    """The hash of the tokenizer a reference expects (its run's data, its own files, or its inherit.py
    reference); None when it cannot be told here (data.check_bins then insists on an equal vocabulary size):
    the checkpoint does not say, or names a tokenizer this machine does not have. A tokenizer that is there
    but does not load is an error."""
    try:
        spec = tokenizer_spec_of(source)
    except UserError:
        return None
    try:
        return load_tokenizer(spec).hash
    except UserError:
        if spec != "gpt2" and Path(spec).exists():
            raise
        return None


# ------------------------------------------------------------------------------------------ writing


def save_checkpoint(path, model: nn.Module, **extra) -> None:
    """A project checkpoint: {'config', 'model' (plain state dict, no wrapper prefixes), **extra}, written
    atomically."""
    model = unwrap(model)
    obj = {"config": model.config.to_dict(), "model": model.state_dict(), **extra}

    def write(tmp):
        # through a Python file: a full disk then surfaces as ENOSPC, not as torch's "unexpected pos", and the
        # archive is not named after the random temporary file (same checkpoint, same bytes)
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    atomic_write(path, write)


def save_hf(model: nn.Module, out_dir) -> None:
    """Write config.json + model.safetensors that transformers' from_pretrained loads as the matching HF
    class."""
    from safetensors.torch import save_file

    model = unwrap(model)
    config, state = model.config, model.state_dict()
    table, out = GPT2_HF if config.arch == "gpt2" else LLAMA_HF, {}
    # before anything is written: refuses a model without a class
    meta = json.dumps(hf_config(config), indent=2)
    for name, t in state.items():
        if name == "lm_head.weight" and config.tie_embeddings:
            continue
        t = t.detach().float().cpu()
        if name in ("wte.weight", "lm_head.weight"):
            t = t[: config.vocab_size]
        sources = source_names(table, name)
        pieces = t.split(fused_sizes(config, name)) if len(sources) > 1 else [t]
        for src, piece in zip(sources, pieces):
            out[src] = (
                piece.t() if config.arch == "gpt2" and GPT2_CONV1D.search(src) else piece
            ).contiguous()
    if config.arch == "gpt2":  # HF GPT-2 always has biases: a bias-free model is the same with zero biases
        for name, m in model.named_modules():
            if isinstance(m, (nn.Linear, nn.LayerNorm)) and m.bias is None and name != "lm_head":
                out[source_names(table, name + ".bias")[0]] = torch.zeros(m.weight.shape[0])
    out_dir = Path(out_dir)
    atomic_write(out_dir / "model.safetensors", lambda tmp: save_file(out, tmp, metadata={"format": "pt"}))
    atomic_write(out_dir / "config.json", lambda tmp: Path(tmp).write_text(meta))
