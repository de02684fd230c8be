"""Tensors read from files lazily and safely, whatever the model: torch.load that never unpickles code,
a HF folder's safetensors (sharded or not) or pytorch_model*.bin opened only as tensors are asked for, and a
GGUF tensor dequantised. weights.py maps these files' tensor names onto the model's."""

import contextlib
import json
import pickletools
import zipfile
from pathlib import Path

import torch

from inheritune.util import UserError


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
        if is_damaged(path):
            raise UserError(
                f"{path} is damaged or not a PyTorch checkpoint (neither a complete torch.save archive "
                f"nor a well-formed pickle); copy or download it again"
            ) from None
        detail = str(e).partition("WeightsUnpickler error:")[2].strip().split("\n")[0].split(". ")[0][:120]
        raise UserError(
            f"{path} holds Python objects other than tensors and containers, which cannot be loaded "
            f"safely ({detail or type(e).__name__}); re-save it as safetensors or as a state dict of plain "
            f"tensors"
        ) from None


def is_damaged(path) -> bool:
    """True unless `path` is a complete torch.save zip archive or a well-formed pickle: parsed, never
    executed."""
    try:
        with contextlib.ExitStack() as stack:
            # a legacy torch.save file is a pickle from its first byte
            f = stack.enter_context(open(path, "rb"))
            if zipfile.is_zipfile(path):
                archive = stack.enter_context(zipfile.ZipFile(f))
                f = archive.open(next(n for n in archive.namelist() if n.endswith("data.pkl")))
            for _ in pickletools.genops(f):
                pass
        return False
    except Exception:  # a truncated archive, a missing data.pkl, an unknown opcode, an early end
        return True


def hf_tensor_reader(folder: Path):
    """read(name) over a HF folder's safetensors (single or sharded) or pytorch_model*.bin, opening files
    lazily."""
    index = [
        folder / n
        for n in ("model.safetensors.index.json", "pytorch_model.bin.index.json")
        if (folder / n).exists()
    ]
    single = [n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).exists()]
    if not index and not single:
        raise UserError(f"{folder} has config.json but no model.safetensors or pytorch_model.bin")
    loaded_bins = {}

    def open_file(file_name):  # sharded checkpoints: only the shards holding requested tensors are opened
        if not (folder / file_name).exists():
            raise UserError(
                f"{folder / file_name} is missing (named by {index[0].name}); get the whole checkpoint"
            )
        if file_name.endswith(".safetensors"):  # memory-mapped, and unmapped after each read to keep RSS low
            from safetensors import safe_open

            try:
                return safe_open(str(folder / file_name), framework="pt")
            except Exception as e:  # SafetensorError: a truncated download, a file of another kind
                raise UserError(
                    f"{folder / file_name} is damaged or truncated ({str(e).splitlines()[0][:120]}); "
                    f"download it again"
                ) from None
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
            missing_tensor(folder, name)
        with open_file(weight_map[name]) as f:
            return f.get_tensor(name) if hasattr(f, "get_tensor") else f[name]

    return read, weight_map


def read_gguf_tensor(t, path) -> torch.Tensor:
    """A tensor of the GGUF at path, dequantised to float32 by the gguf package."""
    import gguf

    try:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
    except NotImplementedError:
        kind = gguf.GGMLQuantizationType(t.tensor_type).name
        raise UserError(
            f"{path}: tensor {t.name} is {kind}, which the gguf package cannot dequantise; use a file of "
            f"another quantisation (F16, Q8_0, Q4_K_M, ...) or the model's HF folder"
        ) from None
    return torch.from_numpy(values.reshape(t.shape[::-1].tolist()).copy())


def missing_tensor(path, name):
    raise UserError(
        f"{path} has no tensor '{name}': the checkpoint is incomplete or not of the architecture "
        f"its config says; re-export it"
    )
