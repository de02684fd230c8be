"""Inheritune v2's verdict: does an inherited model of some depth match the reference? (train.py's `grow` runs
it.)

Both sides are scored by one statistic on the same fixed val windows (data.val_windows):
- When the reference is a train.py run whose own log holds its val curve on these windows, trained with this
  loop's recipe (steps, batch, schedule, eval interval), both are scored by the mean of their last k val
  evaluations: a curve that is still falling is compared with one still falling, at the same steps.
- Otherwise (a downloaded model, an inherit.py output, a run on other data, windows or recipe) the reference
  has one comparable number, the val loss of its final weights, so each round is scored by its final
  evaluation too (k = 1).
A round matches when its score, averaged over its seeds, is at most the reference's + grow_tolerance.
growth.json keeps both scores, the margin, and with several seeds their spread, so a reader sees how close the
call was."""

import math
from pathlib import Path
from statistics import mean, stdev

from inheritune.util import read_log
from weights import open_weights

# What a round must share with the reference's own training for the two curves to be compared step for step.
RECIPE_KEYS = (
    "max_iters",
    "batch_size",
    "block_size",
    "learning_rate",
    "min_lr",
    "warmup_iters",
    "lr_decay_iters",
    "weight_decay",
    "beta1",
    "beta2",
    "grad_clip",
    "dropout",
    "eval_interval",
    "eval_tokens",
)


def reference_curve(ref, recipe: dict, data_meta: dict) -> tuple[list | None, list | None, str]:
    """(the reference's val curve from its own log, or None; its recipe keys that differ from this loop's, or
    None when it has no recipe; why the curve is or is not used)."""
    meta = open_weights(ref).meta
    run = meta.get("train_config")
    if run is None or "step" not in meta:
        return None, None, "the reference has no train.py log (a downloaded model or an inherit.py output)"
    differences = [
        f"{k}={recipe[k]!r} (reference: {run.get(k)!r})" for k in RECIPE_KEYS if run.get(k) != recipe[k]
    ]
    theirs = meta["data"]["meta"]
    same_val = (theirs.get("settings"), theirs["val"]) == (data_meta.get("settings"), data_meta["val"])
    log = (Path(ref) if Path(ref).is_dir() else Path(ref).parent) / "log.jsonl"
    curve = [
        [r["step"], r["val_loss"]] for r in read_log(log)[1:] if "val_loss" in r and r["step"] <= meta["step"]
    ]
    if differences:
        return None, differences, "the reference was trained with another recipe: " + ", ".join(differences)
    if not same_val:
        return (
            None,
            [],
            "the reference's log is on another val set (the bins' fingerprint or tokenizer differ)",
        )
    if meta["step"] != recipe["max_iters"]:
        return None, [], f"the reference stopped at step {meta['step']} of its {recipe['max_iters']}"
    if not curve or curve[-1][0] != meta["step"]:
        return None, [], f"{log} holds no val evaluation at the reference's final step {meta['step']}"
    return curve, [], "the reference's own log holds its val curve on these windows, under this recipe"


def score(curve: list, k: int) -> float:
    """The statistic: the mean of the last k val losses of a [[step, loss], ...] curve (k = 1: the final
    one)."""
    return mean(loss for _, loss in curve[-k:])


def verdict(scores: list[float], reference_score: float, tolerance: float) -> dict:
    """The growth loop's decision for one depth, from its runs' scores (one per seed)."""
    margin = mean(scores) - reference_score
    sd = stdev(scores) if len(scores) > 1 else None
    return {
        "score": mean(scores),
        "seed_sd": sd,
        "margin": margin,
        "matches": margin <= tolerance,
        # the call is within two standard errors of the seed mean: another set of seeds could flip it
        "within_noise": None if sd is None else abs(margin - tolerance) <= 2 * sd / math.sqrt(len(scores)),
    }


def growth_table(state: dict, tolerance: float) -> str:
    lines = [
        f"statistic: {state['statistic']} (k={state['k']}), because {state['why']}",
        "| depth | seeds | final val | score | ± sd | reference | margin | verdict |",
        "|---" * 8 + "|",
    ]
    for r in state["rounds"]:
        finals = ", ".join(f"{run['final_val_loss']:.4f}" for run in r["runs"])
        sd = "—" if r["seed_sd"] is None else f"{r['seed_sd']:.4f}"
        call = "matches" if r["matches"] else "worse: grow"
        call += " (within seed noise)" if r["within_noise"] else ""
        lines.append(
            f"| {r['n_layer']} | {len(r['runs'])} | {finals} | {r['score']:.4f} | {sd} | "
            f"{state['reference_score']:.4f} | {r['margin']:+.4f} | {call} |"
        )
    if state["rounds"] and not state["rounds"][-1]["matches"]:
        lines.append(
            f"no depth up to the limit reached the reference's {state['reference_score']:.4f} "
            f"(+ tolerance {tolerance:g})"
        )
    return "\n".join(lines)
