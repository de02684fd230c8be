"""The CPU demo (the README's first command): the whole Inheritune method on the Shakespeare plays, offline,
in minutes on 2 cores — through the same scripts and code paths as the GPU runs; only the configs are smaller.

  1. a 1024-token byte-level BPE trained on the plays (small vocabulary: a CPU spends its time on the model)
  2. prepare_owt.py: the plays -> data/demo_shakespeare/{train,val}.bin
  3. train.py config/demo_ref8.py       the reference: 8 layers from scratch
  4. train.py config/demo_inherit4.py   Inheritune v2: inherit 4 layers, train, grow by 2 until the reference
     is matched
  5. train.py config/demo_random4.py    baseline: 4 layers from random init, same steps
  6. a table and out/demo/demo.png

    python demo.py            # or: make demo

Writes data/demo_shakespeare/ (tokenizer and bins) and out/demo/: ref8/, inherit/ (growth.json, growth.png and
a folder per round), random4/ and demo.png, all under the working directory. A rerun deletes nothing: finished
runs are kept and an interrupted one continues (delete out/demo's run folders to train them afresh)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import train
from growth import score, verdict
from inheritune.data import shakespeare_files
from inheritune.runs import read_log
from inheritune.util import UserError, atomic_write, cli, plot_curves

# as the demo configs say: under the cwd
DATA, OUT, VOCAB = Path("data/demo_shakespeare"), Path("out/demo"), 1024
HERE = Path(__file__).resolve().parent  # the scripts and configs, wherever the demo is run from


def train_tokenizer(path: Path) -> None:
    """A byte-level BPE on the plays, with <|endoftext|> as the document separator."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train([str(f) for f in shakespeare_files()], trainer)
    atomic_write(path, lambda tmp: tok.save(str(tmp)))  # a rerun trusts a tokenizer.json that is there


def prepare(tokenizer: Path) -> None:
    script = HERE / "prepare_owt.py"  # a script of its own: run, not imported
    args = ["--source", "shakespeare", "--tokenizer", tokenizer, "--out", DATA]
    if subprocess.run([sys.executable, script, *args]).returncode:
        raise UserError("prepare_owt.py failed (its error is above)")


def step(title: str, run) -> float:
    print(f"\n=== {title}", flush=True)
    t0 = time.time()
    run()
    return time.time() - t0


def val_curve(out_dir: Path) -> list[list]:
    """[[step, val loss], ...] of a run, the form growth.json keeps for each round."""
    return [[r["step"], r["val_loss"]] for r in read_log(out_dir / "log.jsonl") if "val_loss" in r]


# (key, step title, config, run folder under out/demo)
RUNS = (
    ("reference", "3. reference: 8 layers from scratch", "demo_ref8.py", "ref8"),
    ("inherit", "4. Inheritune v2 growth loop from 4 layers", "demo_inherit4.py", "inherit"),
    ("random", "5. baseline: 4 layers from random init", "demo_random4.py", "random4"),
)


def main():
    tokenizer = DATA / "tokenizer.json"
    times, continued = {}, {key for key, _, _, folder in RUNS if (OUT / folder).exists()}
    if not tokenizer.exists():  # trained once: the bins and the runs made with it stay valid
        times["tokenizer"] = step(
            f"1. BPE tokenizer ({VOCAB} tokens) on the plays", lambda: train_tokenizer(tokenizer)
        )
    times["prepare"] = step("2. prepare_owt.py --source shakespeare", lambda: prepare(tokenizer))
    for key, title, config, _ in RUNS:
        title += " (continuing the earlier demo's run)" if key in continued else ""
        times[key] = step(title, lambda config=config: train.main([str(HERE / "config" / config)]))
    report(times, continued)


def report(times: dict, continued: set) -> None:
    """Step 6: every model's curve scored as the growth loop scores it, as a table and a plot."""
    cfg = train.load_config([str(HERE / "config" / "demo_inherit4.py")])
    growth = json.loads((OUT / "inherit" / "growth.json").read_text())
    ref_score, k = growth["reference_score"], growth["k"]
    random_curve = val_curve(OUT / "random4")
    random_matches = verdict([score(random_curve, k)], ref_score, cfg.grow_tolerance)["matches"]
    seconds = {key: f"{times[key]:.0f} s" + (" (continued)" if key in continued else "") for key, *_ in RUNS}
    rows = [("reference (scratch)", 8, val_curve(OUT / "ref8"), "-", seconds["reference"])]
    for r in growth["rounds"]:
        call = "matches" if r["matches"] else "worse: grow"
        curve = r["runs"][0]["val_curve"]
        rows.append((f"inherited, round {r['round']}", r["n_layer"], curve, call, "(in growth loop)"))
    random_call = "matches" if random_matches else "worse"
    rows.append(("random init (scratch)", 4, random_curve, random_call, seconds["random"]))
    step_tokens = cfg.batch_size * cfg.block_size
    print(
        f"\n=== 6. results: every model trained {cfg.max_iters} steps x {step_tokens} tokens = "
        f"{cfg.max_iters * step_tokens:,} tokens; val loss on the same {cfg.eval_tokens:,} val tokens; each "
        f"model scored as the growth loop scores it: {growth['statistic']}, k={k}\n"
    )
    columns = [
        "model",
        "layers",
        "val loss at step 0",
        "final val loss",
        "score",
        "reference's score",
        "verdict",
    ]
    print(f"| {' | '.join(columns)} | time |\n" + "|---" * (len(columns) + 1) + "|")
    for name, layers, curve, call, when in rows:
        print(
            f"| {name} | {layers} | {curve[0][1]:.3f} | {curve[-1][1]:.3f} | {score(curve, k):.3f} | "
            f"{ref_score:.3f} | {call} | {when} |"
        )
    rounds, total = len(growth["rounds"]), sum(times.values())
    print(f"\ngrowth loop: {seconds['inherit']} for {rounds} round(s); total {total:.0f} s")
    curves = {
        f"{name.split(' (')[0].split(',')[0]} ({layers} layers)": curve for name, layers, curve, *_ in rows
    }
    plot_curves(curves, OUT / "demo.png", reference=ref_score)
    print(f"curves: {OUT / 'demo.png'}")


if __name__ == "__main__":
    cli(main, interrupted="interrupted: rerun the same command to continue")
