"""growth.py: the growth loop (every round from the reference, stopping at the first matching depth,
resuming after a kill, the reference opened once), and the verdict (one statistic for both sides, the seeds'
spread)."""

import json
import re
import shutil
import signal

import pytest
import torch

import train
import weights
from conftest import TINY, copy_bins, run_log, run_train, train_here, tree_hash, wait_for
from growth import reference_curve, score, verdict
from inherit import inherit_layers
from inheritune.data import read_meta, val_loss
from inheritune.util import UserError
from weights import load_model, save_checkpoint


def grow_args(small_bins, reference, out, *extra):
    loop = ["--grow=True", "--n_layer=1", "--grow_step=1", "--max_iters=20", "--grow_last_k=2"]
    loop += ["--grow_other_recipe=True"]  # 20 steps against the reference's 60: compared on final val losses
    return [*TINY, f"--data_dir={small_bins}", f"--ref={reference}", *loop, f"--out_dir={out}", *extra]


def growth_json(folder) -> dict:
    return json.loads((folder / "growth.json").read_text())


def curves(rounds) -> list:
    return [[run["val_curve"] for run in r["runs"]] for r in rounds]


@pytest.fixture(scope="module")
def every_depth(small_bins, reference, tmp_path_factory):
    """A loop that never matches (tolerance -100): every depth up to the reference's, each from the
    reference."""
    out = tmp_path_factory.mktemp("every_depth")
    train_here(*grow_args(small_bins, reference, out, "--grow_tolerance=-100"))
    return out, growth_json(out)


def test_every_round_starts_from_the_reference_and_every_depth_is_tried(small_bins, reference, every_depth):
    out, state = every_depth
    rounds = state["rounds"]
    assert [r["n_layer"] for r in rounds] == [1, 2, 3, 4] and not any(r["matches"] for r in rounds)
    assert state["result"]["matched_depth"] is None  # exhausted: said plainly, in growth.json and on screen
    assert state["result"]["summary"].startswith("no depth up to 4 matched the reference's")
    assert (out / "growth.png").exists()
    # 20 steps against a reference trained 60: not the reference's recipe, so flagged, and both sides are
    # scored by their final val loss (the reference's evaluated now on the same windows)
    assert state["recipe_differences"] == ["max_iters=20 (reference: 60)"] and state["k"] == 1
    assert state["statistic"] == "final val loss" and "another recipe" in state["why"]
    assert state["reference_score"] == val_loss(load_model(reference), str(small_bins), 32, 2048, 2)
    for r in rounds:  # each round starts from the reference, not from the previous round
        assert r["score"] == r["runs"][0]["final_val_loss"] == r["runs"][0]["val_curve"][-1][1]
        ckpt = torch.load(f"{r['runs'][0]['dir']}/ckpt.pt", weights_only=True)
        assert ckpt["inherit"]["reference"]["path"] == str(reference.resolve())
        assert ckpt["inherit"]["layers"] == list(range(r["n_layer"]))
    fresh, _ = inherit_layers(reference, n_layer=2, dtype=torch.float32)
    assert rounds[1]["runs"][0]["val_curve"][0][1] == val_loss(fresh, str(small_bins), 32, 2048, 2)


def stopping_tolerance(state: dict) -> tuple[int, float]:
    """(the first depth index whose score beats every shallower one, a tolerance that it meets and no
    shallower depth does)."""
    means = [r["score"] for r in state["rounds"]]
    stop_at = next(k for k in range(1, 4) if means[k] < min(means[:k]))
    return stop_at, (means[stop_at] + min(means[:stop_at])) / 2 - state["reference_score"]


def test_the_loop_stops_at_the_first_matching_depth(small_bins, reference, every_depth, tmp_path):
    stop_at, tolerance = stopping_tolerance(every_depth[1])
    train_here(*grow_args(small_bins, reference, tmp_path, f"--grow_tolerance={tolerance}"))
    stopped = growth_json(tmp_path)["rounds"]
    assert [(r["n_layer"], r["matches"]) for r in stopped] == [
        (k + 1, k == stop_at) for k in range(stop_at + 1)
    ]
    assert curves(stopped) == curves(every_depth[1]["rounds"][: stop_at + 1])
    assert growth_json(tmp_path)["result"]["matched_depth"] == stop_at + 1


def test_a_killed_loop_resumes_its_round_and_ends_as_the_uninterrupted_one(
    small_bins, reference, every_depth, tmp_path
):
    stop_at, tolerance = stopping_tolerance(every_depth[1])
    args = grow_args(
        small_bins, reference, tmp_path, f"--grow_tolerance={tolerance}", "--checkpoint_interval=5"
    )
    proc = run_train(*args, background=tmp_path.parent / "killed.txt")
    wait_for((tmp_path / "round2_2L" / "ckpt.pt").exists, proc, 120, "round 2's first checkpoint")
    proc.send_signal(signal.SIGKILL)  # killed during round 2
    proc.wait()
    assert not (tmp_path / "round3_3L").exists()
    train_here(*args)  # the same command: the loop resumes round 2
    resumed = growth_json(tmp_path)["rounds"]
    assert [(r["n_layer"], r["matches"]) for r in resumed] == [
        (k + 1, k == stop_at) for k in range(stop_at + 1)
    ]
    assert curves(resumed) == curves(every_depth[1]["rounds"][: stop_at + 1])


def test_the_reference_is_opened_once_for_the_whole_loop(small_bins, reference, tmp_path, monkeypatch):
    opened = []

    def counting(path):
        opened.append(str(path))
        return open_weights(path)

    open_weights = weights.open_weights
    monkeypatch.setattr(weights, "open_weights", counting)
    monkeypatch.setattr(train, "open_weights", counting)
    train_here(
        *grow_args(
            small_bins, reference, tmp_path, "--grow_tolerance=-100", "--max_iters=2", "--warmup_iters=1"
        )
    )
    assert len(growth_json(tmp_path)["rounds"]) == 4
    assert opened == [str(reference)]


def test_the_loop_reads_the_reference_curve_from_its_own_log_and_decides_on_the_seeds_mean(
    small_bins, reference, tmp_path
):
    """The reference trained with this recipe (60 steps): both sides are scored by the mean of their last
    grow_last_k val losses, the reference's taken from its own log; grow_seeds runs each round over seeds."""
    extra = "--max_iters=60", "--n_layer=3", "--grow_max_layer=3", "--grow_seeds=2"
    train_here(*grow_args(small_bins, reference, tmp_path, *extra))
    state = growth_json(tmp_path)
    log = [r["val_loss"] for r in run_log(reference.parent)[1] if "val_loss" in r]
    assert state["statistic"] == "mean of the last k val losses" and state["k"] == 2
    assert state["recipe_differences"] == [] and state["reference_score"] == pytest.approx(sum(log[-2:]) / 2)
    (only,) = state["rounds"]
    assert [run["seed"] for run in only["runs"]] == [1337, 1338]
    assert only["margin"] == pytest.approx(only["score"] - state["reference_score"])
    assert only["matches"] == (only["margin"] <= 0)  # tolerance 0: the call follows the margin
    assert [run["dir"] for run in only["runs"]] == [
        str(tmp_path / "round1_3L" / f"seed{s}") for s in (1337, 1338)
    ]
    scores = [sum(v for _, v in run["val_curve"][-2:]) / 2 for run in only["runs"]]
    assert only["score"] == pytest.approx(sum(scores) / 2) and only["seed_sd"] > 0
    assert only["runs"][0]["val_curve"] != only["runs"][1]["val_curve"]  # two seeds, two runs


def test_a_loop_continues_only_under_its_own_recipe(small_bins, reference, tmp_path):
    train_here(
        *grow_args(small_bins, reference, tmp_path, "--grow_max_layer=1", "--max_iters=2", "--warmup_iters=1")
    )
    message = re.escape("growth.json was made with other settings: learning_rate=0.01 (was 0.003)")
    with pytest.raises(UserError, match=message):
        train_here(
            *grow_args(
                small_bins, reference, tmp_path, "--max_iters=2", "--warmup_iters=1", "--learning_rate=1e-2"
            )
        )


def test_the_loop_grows_by_criterion_each_round_choosing_its_own_layers(small_bins, reference, tmp_path):
    """inherit_select=last: round n inherits the reference's last n layers, chosen afresh each round."""
    extra = (
        "--grow_tolerance=-100",
        "--max_iters=2",
        "--warmup_iters=1",
        "--n_layer=2",
        "--inherit_select=last",
    )
    train_here(*grow_args(small_bins, reference, tmp_path, *extra))
    rounds = growth_json(tmp_path)["rounds"]
    chosen = [torch.load(f"{r['runs'][0]['dir']}/ckpt.pt", weights_only=True)["inherit"] for r in rounds]
    assert [c["layers"] for c in chosen] == [[2, 3], [1, 2, 3], [0, 1, 2, 3]]
    assert all(c["selection"]["criterion"] == "last" for c in chosen)


def test_a_loop_continues_only_on_its_own_bins(small_bins, reference, tmp_path):
    data = copy_bins(small_bins, tmp_path / "data")
    extra = "--grow_max_layer=1", "--max_iters=2", "--warmup_iters=1"
    args = grow_args(data, reference, tmp_path / "loop", *extra)
    train_here(*args)
    before = tree_hash(tmp_path / "loop")
    settings = json.loads((data / "meta.json").read_text())["settings"]
    shutil.rmtree(data)  # prepared again into the same folder, from another corpus
    copy_bins(small_bins, data, settings={**settings, "fingerprint": "another corpus"})
    with pytest.raises(UserError, match="holds other bins than .*growth.json began on"):
        train_here(*args)
    assert tree_hash(tmp_path / "loop") == before


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--n_layer=5"], "n_layer=5 is outside 1..4"),
        (["--n_layer=3", "--grow_max_layer=2"], "n_layer=3 is deeper than grow_max_layer=2"),
    ],
)
def test_error_start_deeper_than_the_reference_or_the_limit(small_bins, reference, tmp_path, extra, message):
    with pytest.raises(UserError, match=re.escape(message)):
        train_here(*grow_args(small_bins, reference, tmp_path / "x", *extra))
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------- verdict


def test_verdict_scores_the_reference_by_the_rounds_statistic():
    """The demo's case under a rule that mixes statistics: the candidate's last-3 mean (4.247) against the
    reference's final value (4.241) says "worse", though the candidate ended lower (4.224) and the reference's
    own last-3 mean is 4.267."""
    reference = [[400, 4.301], [500, 4.259], [600, 4.241]]
    candidate = [[400, 4.272], [500, 4.245], [600, 4.224]]
    mixed = score(candidate, 3) <= reference[-1][1]
    same = verdict([score(candidate, 3)], score(reference, 3), tolerance=0.0)
    assert not mixed and same["matches"] and same["margin"] == pytest.approx(4.247 - 4.267, abs=1e-9)
    assert verdict([score(candidate, 1)], score(reference, 1), 0.0)["matches"]  # final against final agrees
    seeds = verdict([4.25, 4.27, 4.26], 4.262, tolerance=0.0)  # mean 4.26 matches, within two standard errors
    assert seeds["matches"] and seeds["seed_sd"] == pytest.approx(0.01) and seeds["within_noise"]
    far = verdict([4.25, 4.251, 4.252], 4.30, tolerance=0.0)
    assert far["matches"] and not far["within_noise"]


def test_verdict_counts_the_noise_of_several_reference_seeds():
    one = verdict([4.25, 4.26, 4.27], 4.30, tolerance=0.0)  # the candidate's spread alone: a clear call
    assert one["matches"] and not one["within_noise"]
    several = verdict(
        [4.25, 4.26, 4.27], [4.22, 4.30, 4.38], tolerance=0.0
    )  # same reference mean, wide spread
    assert (
        several["margin"] == pytest.approx(one["margin"]) and several["matches"] and several["within_noise"]
    )
    assert (
        verdict([4.26], [4.25, 4.27], 0.0)["within_noise"] is not None
    )  # the reference's spread alone counts
    assert verdict([4.26], 4.25, 0.0)["within_noise"] is None  # no spread on either side: cannot be told


def test_the_loop_decides_on_the_mean_of_the_reference_seeds_and_refuses_another_recipe_unasked(
    small_bins, reference, tmp_path
):
    second = tmp_path / "ref_seed2"
    train_here(
        *TINY, "--n_layer=4", f"--data_dir={small_bins}", "--max_iters=60", "--seed=2", f"--out_dir={second}"
    )
    extra = "--grow_max_layer=1", "--max_iters=2", "--warmup_iters=1", f"--grow_references={second}"
    train_here(*grow_args(small_bins, reference, tmp_path / "loop", *extra))
    state = growth_json(tmp_path / "loop")
    scores = [val_loss(load_model(r), str(small_bins), 32, 2048, 2) for r in (reference, second / "ckpt.pt")]
    assert state["statistic"] == "final val loss" and state["reference_scores"] == pytest.approx(scores)
    assert state["reference_score"] == pytest.approx(sum(scores) / 2) and state["reference_sd"] > 0
    (only,) = state["rounds"]
    assert only["margin"] == pytest.approx(only["score"] - state["reference_score"])
    unasked = [
        a for a in grow_args(small_bins, reference, tmp_path / "x", *extra) if "grow_other_recipe" not in a
    ]
    with pytest.raises(
        UserError,
        match=re.escape(
            "was trained with another recipe than the rounds' (max_iters=2 (reference: 60), warmup_iters=1"
        ),
    ):
        train_here(*unasked)
    assert not (tmp_path / "x").exists()


def test_verdict_falls_back_to_final_values_for_an_unfinished_or_foreign_reference(
    small_bins, reference, tmp_path
):
    """A reference stopped before its max_iters, or trained on other bins, has no curve comparable step for
    step."""
    ckpt = torch.load(reference, weights_only=True)
    recipe, meta = ckpt["train_config"], read_meta(small_bins)
    assert reference_curve(reference, recipe, meta)[0] is not None  # finished, same bins: its own curve
    extra = {k: v for k, v in ckpt.items() if k not in ("config", "model")}
    save_checkpoint(tmp_path / "ckpt.pt", load_model(reference), **{**extra, "step": 30})
    shutil.copy(reference.parent / "log.jsonl", tmp_path)
    curve, differences, why = reference_curve(tmp_path / "ckpt.pt", recipe, meta)
    assert curve is None and differences == [] and why == "the reference stopped at step 30 of its 60"
    other = {**meta, "settings": {**meta["settings"], "fingerprint": "another corpus"}}
    assert "another val set" in reference_curve(reference, recipe, other)[2]
