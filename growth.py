"""Inheritune v2's growth loop and its verdict. `grow` trains the first n layers of the reference,
inherited, with the reference's recipe; if the result is worse than the reference, it grows n by grow_step and
starts again *from the reference*, until a depth matches or the reference's depth is reached (train.py runs it
when grow=True, handing it train.py's `train` for each run).

The verdict scores both sides by one statistic on the same fixed val windows (data.val_windows):
- When the reference is a train.py run whose own log holds its val curve on these windows, trained with this
  loop's recipe (steps, batch, schedule, eval interval), both are scored by the mean of their last k val
  evaluations: a curve that is still falling is compared with one still falling, at the same steps.
- Otherwise (a downloaded model, an inherit.py output, a run on other data, windows or recipe) the reference
  has one comparable number, the val loss of its final weights, so each round is scored by its final
  evaluation too (k = 1).
A round matches when its score, averaged over its seeds, is at most the reference's + grow_tolerance.
growth.json keeps both scores, the margin, and with several seeds their spread, so a reader sees how close the
call was.
"""

import json
import math
from dataclasses import asdict, replace
from pathlib import Path
from statistics import mean, stdev

from inheritune.data import check_bins, check_same_bins, read_meta, val_loss
from inheritune.runs import check_same_recipe, read_log, recipe_of
from inheritune.util import UserError, atomic_write, plot_curves
from weights import load_model, opened

# ------------------------------------------------------------------------------------------------- the loop


def grow(cfg, rt, stop, reference, train) -> dict:
    """Rounds of inherit-n-layers-from-the-reference + the full recipe (grow_seeds runs each), n += grow_step
    until a round's score matches the reference's. Resumable at any point: growth.json keeps every finished
    round, and an unfinished round's runs resume. reference: the opened `ref`; train: train.py's
    train(cfg, rt, stop, reference) -> the run's log records."""
    max_layer = deepest_round(cfg, reference)
    state = growth_state(cfg, rt, reference)
    rounds = state["rounds"]
    n_layer = rounds[-1]["n_layer"] + cfg.grow_step if rounds else cfg.n_layer
    while not (rounds and rounds[-1]["matches"]) and n_layer <= max_layer:
        round_dir, runs = Path(cfg.out_dir) / f"round{len(rounds) + 1}_{n_layer}L", []
        for seed in range(cfg.seed, cfg.seed + cfg.grow_seeds):
            run_dir = round_dir if cfg.grow_seeds == 1 else round_dir / f"seed{seed}"
            init_from = "resume" if (run_dir / "ckpt.pt").exists() else "inherit"  # from the reference
            run_cfg = replace(
                cfg, out_dir=str(run_dir), n_layer=n_layer, seed=seed, grow=False, init_from=init_from
            )
            runs.append(run_record(seed, run_dir, train(run_cfg, rt, stop, reference), state["k"]))
        ref_scores = state.get("reference_scores", [state["reference_score"]])
        rounds.append(
            round_record(len(rounds) + 1, n_layer, cfg.max_iters, runs, ref_scores, cfg.grow_tolerance)
        )
        save_growth_state(state, cfg, rt)
        n_layer = max_layer if n_layer < max_layer < n_layer + cfg.grow_step else n_layer + cfg.grow_step
    state["result"] = loop_result(state, max_layer, cfg.grow_tolerance)
    save_growth_state(state, cfg, rt)
    if rt.master:
        print(growth_table(state))
        plot_growth(state, Path(cfg.out_dir) / "growth.png")
    return state


def deepest_round(cfg, reference) -> int:
    """The loop's depth limit (grow_max_layer, at most the reference's depth); n_layer checked against it."""
    ref_depth = reference.config.n_layer
    max_layer = min(cfg.grow_max_layer or ref_depth, ref_depth)
    if cfg.n_layer > ref_depth:
        raise UserError(
            f"n_layer={cfg.n_layer} is outside 1..{ref_depth} (the reference has {ref_depth} layers)"
        )
    if cfg.n_layer > max_layer:
        raise UserError(
            f"n_layer={cfg.n_layer} is deeper than grow_max_layer={cfg.grow_max_layer}, the loop's last "
            f"depth: raise grow_max_layer or lower n_layer"
        )
    return max_layer


def growth_state(cfg, rt, reference) -> dict:
    """growth.json: the rounds so far and the reference's side of the verdict, read back when the loop
    continues (under the recipe it began with), else set up and written now."""
    path = Path(cfg.out_dir) / "growth.json"
    state = json.loads(path.read_text()) if path.exists() else {"rounds": []}
    check_same_recipe(cfg, state.get("recipe", {}), path)  # rounds and the target mean something under one
    if "data" in state:  # ... and on one set of bins
        check_same_bins(cfg.data_dir, state["data"], path)
    if "reference_score" not in state:
        settings, data = asdict(cfg), read_meta(cfg.data_dir)
        state.update(recipe=recipe_of(settings), data=data, reference=cfg.ref)
        state.update(reference_layers=reference.config.n_layer)
        state.update(references_side(cfg, rt, reference, settings, data))
    save_growth_state(state, cfg, rt)
    if rt.master:
        print(
            f"growth loop: reference {cfg.ref} ({reference.config.n_layer} layers), {state['statistic']} "
            f"(k={state['k']}) {state['reference_score']:.4f}, because {state['why']}",
            flush=True,
        )
    return state


def references_side(cfg, rt, reference, settings: dict, data: dict) -> dict:
    """The reference's side of the verdict over its seeds (ref, then grow_references): each scored by one
    statistic, the mean of the last k val losses of its own log where every seed has a comparable curve,
    else the val loss of its final weights. A reference trained with another recipe is refused unless
    grow_other_recipe."""
    others = [p.strip() for p in (cfg.grow_references or "").split(",") if p.strip()]
    weights = [reference, *(opened(p) for p in others)]
    sides = [reference_side(w, settings, data, cfg.grow_last_k) for w in weights]
    for path, side in zip([cfg.ref, *others], sides):
        if side["recipe_differences"] and not cfg.grow_other_recipe:
            raise UserError(
                f"reference {path} was trained with another recipe than the rounds' "
                f"({', '.join(side['recipe_differences'])}): train the rounds with its recipe, or set "
                f"grow_other_recipe=True to compare final val losses anyway"
            )
    side = sides[0]
    if all(s["reference_score"] is not None for s in sides):
        k = min(s["k"] for s in sides)
        scores = [score(s["reference_val_curve"], k) for s in sides]
    else:  # a seed without a comparable curve: every seed by the val loss of its final weights
        side = {**side, "statistic": "final val loss", "k": 1, "reference_score": None}
        side["why"] = next(s["why"] for s in sides if s["reference_score"] is None)
        scores = [reference_val_loss(cfg, rt, w) for w in weights]
    sd = stdev(scores) if len(scores) > 1 else None
    return {
        **side,
        "reference_score": mean(scores),
        "reference_scores": scores,
        "reference_sd": sd,
        "references": [cfg.ref, *others],
    }


def save_growth_state(state: dict, cfg, rt) -> None:
    if rt.master:
        text = json.dumps(state, indent=2)
        atomic_write(Path(cfg.out_dir) / "growth.json", lambda tmp: Path(tmp).write_text(text))


def reference_val_loss(cfg, rt, reference) -> float:
    """The reference's val loss on the same fixed windows as every round (when its own log cannot say)."""
    model = load_model(reference, device=rt.device)
    check_bins(cfg.data_dir, model.config.vocab_size, reference.tokenizer_hash)
    model.crop_block_size(cfg.block_size)
    batch = cfg.micro_batch_size
    windows = cfg.data_dir, cfg.block_size, cfg.eval_tokens, batch
    return val_loss(model, *windows, rt.autocast, rt.rank, rt.world, model.config.vocab_size)


# ---------------------------------------------------------------------------------------------- the verdict

# What a round must share with the reference's own training for the two curves to be compared step for step.
RECIPE_KEYS = (
    "max_iters", "batch_size", "block_size", "learning_rate", "min_lr", "warmup_iters", "lr_decay_iters",
    "weight_decay", "beta1", "beta2", "grad_clip", "dropout", "eval_interval", "eval_tokens",
)  # fmt: skip


def reference_side(reference, settings: dict, data_meta: dict, last_k: int) -> dict:
    """The reference's side of the verdict, as growth.json records it: the statistic both sides are scored by
    and why, k, how the reference's recipe differs, its val curve and its score. The score is None when the
    reference has no comparable curve: the caller then evaluates its final weights (k = 1)."""
    curve, differences, why = reference_curve(reference, settings, data_meta)
    k = min(last_k, len(curve)) if curve else 1
    return {
        "statistic": "mean of the last k val losses" if curve else "final val loss",
        "k": k,
        "why": why,
        "recipe_differences": differences,
        "reference_val_curve": curve,
        "reference_score": score(curve, k) if curve else None,
    }


def reference_curve(reference, settings: dict, data_meta: dict) -> tuple[list | None, list | None, str]:
    """(the reference's val curve from its own log, or None; its recipe keys that differ from this loop's, or
    None when it has no recipe; why the curve is or is not used). reference: a path or an opened Weights;
    settings: the loop's config as a dict."""
    weights = opened(reference)
    meta = weights.meta
    run = meta.get("train_config")
    if run is None or "step" not in meta:
        return None, None, "the reference has no train.py log (a downloaded model or an inherit.py output)"
    differences = [
        f"{k}={settings[k]!r} (reference: {run.get(k)!r})" for k in RECIPE_KEYS if run.get(k) != settings[k]
    ]
    theirs = meta["data"]["meta"]
    same_val = (theirs.get("settings"), theirs["val"]) == (data_meta.get("settings"), data_meta["val"])
    log = Path(weights.path).parent / "log.jsonl"
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
    if meta["step"] != settings["max_iters"]:
        return None, [], f"the reference stopped at step {meta['step']} of its {settings['max_iters']}"
    if not curve or curve[-1][0] != meta["step"]:
        return None, [], f"{log} holds no val evaluation at the reference's final step {meta['step']}"
    return curve, [], "the reference's own log holds its val curve on these windows, under this recipe"


def score(curve: list, k: int) -> float:
    """The statistic: the mean of the last k val losses of a [[step, loss], ...] curve (k = 1: the final
    one)."""
    return mean(loss for _, loss in curve[-k:])


def verdict(scores: list[float], reference_scores, tolerance: float) -> dict:
    """The growth loop's decision for one depth, from its runs' scores (one per seed) against the
    reference's (one score, or one per reference seed): the means' difference against the tolerance."""
    references = [reference_scores] if isinstance(reference_scores, (int, float)) else list(reference_scores)
    margin = mean(scores) - mean(references)
    sd = stdev(scores) if len(scores) > 1 else None
    # the standard error of the difference of the means, counting each side that has several seeds
    variance = sum(stdev(xs) ** 2 / len(xs) for xs in (scores, references) if len(xs) > 1)
    return {
        "score": mean(scores),
        "seed_sd": sd,
        "margin": margin,
        "matches": margin <= tolerance,
        # within two standard errors: another set of seeds (of either side) could flip the call
        "within_noise": None if variance == 0 else abs(margin - tolerance) <= 2 * math.sqrt(variance),
    }


def run_record(seed: int, run_dir, records: list[dict], k: int) -> dict:
    """One run of a round, as growth.json records it, from its log records."""
    curve = [[r["step"], r["val_loss"]] for r in records if "val_loss" in r]
    return {
        "seed": seed,
        "dir": str(run_dir),
        "final_val_loss": curve[-1][1],
        "score": score(curve, k),
        "val_curve": curve,
    }


def round_record(number: int, n_layer: int, steps: int, runs: list, reference_scores, tolerance) -> dict:
    """One round (a depth and its runs), with the verdict on it."""
    decision = verdict([run["score"] for run in runs], reference_scores, tolerance)
    return {"round": number, "n_layer": n_layer, "steps": steps, "runs": runs, **decision}


# ----------------------------------------------------------------------------------------------- the record


def growth_table(state: dict) -> str:
    """The rounds as a markdown table: depth, seeds, scores, the margin to the reference and the call."""
    ref_sd = state.get("reference_sd")
    seeds = f" ± {ref_sd:.4f} over {len(state['reference_scores'])} reference seeds" if ref_sd else ""
    lines = [
        f"statistic: {state['statistic']} (k={state['k']}), because {state['why']}; reference "
        f"{state['reference_score']:.4f}{seeds}",
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
    if "result" in state:
        lines.append(state["result"]["summary"])
    return "\n".join(lines)


def loop_result(state: dict, max_layer: int, tolerance: float) -> dict:
    """growth.json's answer, in a sentence too: the depth that matched, or plainly that none did."""
    rounds = state["rounds"]
    if rounds and rounds[-1]["matches"]:
        r = rounds[-1]
        summary = (
            f"depth {r['n_layer']} matches the reference (round {r['round']}, margin {r['margin']:+.4f})"
        )
        return {"matched_depth": r["n_layer"], "summary": summary}
    best = min(rounds, key=lambda r: r["margin"])
    summary = (
        f"no depth up to {max_layer} matched the reference's {state['reference_score']:.4f} (+ tolerance "
        f"{tolerance:g}); the closest was depth {best['n_layer']}, {best['margin']:+.4f} from it"
    )
    return {"matched_depth": None, "summary": summary}


def plot_growth(state: dict, path) -> None:
    """Every round's val curve (one per seed) beside the reference's, and the reference's score as a line."""
    curves = {"reference": state["reference_val_curve"]} if state["reference_val_curve"] else {}
    for r in state["rounds"]:
        for run in r["runs"]:
            seed = f", seed {run['seed']}" if len(r["runs"]) > 1 else ""
            curves[f"{r['n_layer']} layers{seed}"] = run["val_curve"]
    plot_curves(curves, path, reference=state["reference_score"])
