"""What the studies' summaries read back from a train.py run folder: its settings, its FLOPs and its curves,
from the run's own log (no checkpoint needed), and a mean ± sd over seeds as the tables print it."""

import json
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from inheritune.runs import read_log  # noqa: E402
from model import GPT  # noqa: E402
from train_config import TrainConfig, model_config  # noqa: E402


def read_run(folder: Path) -> dict:
    """A run's seed, steps, kd_ratio, FLOPs per trained token (train.py's 6N + attention), the tokens it
    trained on, its training FLOPs (evaluations not counted), its val curve and, distilling, its KL curve."""
    records = read_log(Path(folder) / "log.jsonl")
    config = records[0]["config"]
    cfg = TrainConfig(**{k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__})
    vocab = json.loads((ROOT / cfg.data_dir / "meta.json").read_text())["vocab_size"]
    with torch.device("meta"):
        per_token = GPT(model_config(cfg, vocab)).flops_per_token(cfg.block_size)
    tokens = cfg.max_iters * cfg.batch_size * cfg.block_size
    return {
        "seed": cfg.seed,
        "steps": cfg.max_iters,
        "kd_ratio": cfg.kd_ratio,
        "flops_per_token": per_token,
        "tokens": tokens,
        "flops": per_token * tokens,
        "curve": [[r["step"], r["val_loss"]] for r in records[1:] if "val_loss" in r],
        "kl": [[r["step"], r["val_kl"]] for r in records[1:] if "val_kl" in r],
    }


def mean_sd(xs: list[float], digits: int = 4) -> str:
    """'mean ± sd' over the seeds ('mean' for one, '-' for none)."""
    if not xs:
        return "-"
    sd = f" ± {statistics.stdev(xs):.{digits}f}" if len(xs) > 1 else ""
    return f"{statistics.mean(xs):.{digits}f}{sd}"
