"""Evaluate a checkpoint: val loss on train.py's fixed val windows, and lm-evaluation-harness tasks in memory,
run on lm.py's packed backend (InherituneLM).

    # val loss and perplexity, as train.py measures it
    python eval.py --ckpt out/run --val_data data/openwebtext
    # the paper's suite: MMLU 5-shot, the rest 0-shot
    python eval.py --ckpt out/run --tasks paper
    python eval.py --ckpt model.gguf --tasks piqa,boolq --limit 200 --out results.json
    # local task YAMLs, no network
    python eval.py --ckpt out/run --tasks inheritune_local --include_path tests/tasks

--ckpt is anything weights.load_model reads. Its tokenizer is found automatically: a train.py checkpoint uses
the tokenizer its data was prepared with, an inherit.py checkpoint its reference's, a HF folder its
tokenizer.json (a GPT-2 folder without one: GPT-2's BPE), a GGUF its own vocabulary; --tokenizer overrides.
"""

import argparse
import json
import logging
import math
import os
import socket
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import torch

from inheritune.data import EVAL_TOKENS, check_bins, val_loss
from inheritune.lm import InherituneLM, lm_eval_installed
from inheritune.runtime import resolve_device
from inheritune.tokenizer import load_tokenizer
from inheritune.util import UserError, atomic_write, check_new_output, cli
from weights import load_model, open_weights, opened, tokenizer_spec_of

# The paper's evaluation (Sanyal et al. 2024): lm-eval task, few-shot examples, the metric it reports, and
# chance: the better of a uniform guess and always giving the majority answer, on the split lm-eval scores.
PAPER_SUITE = (
    ("piqa", 0, "acc", 0.50),
    ("boolq", 0, "acc", 0.622),  # validation: 2033 of 3270 answers are "yes"
    ("winogrande", 0, "acc", 0.50),
    # SuperGLUE WSC (what the paper's code calls "wsc"), validation: 66 of 104 "no"
    ("wsc", 0, "acc", 0.635),
    ("logiqa", 0, "acc", 0.25),
    # mc2 is the probability mass on the true answers: no single chance level
    ("truthfulqa_mc2", 0, "acc", None),
    ("mnli", 0, "acc", 0.354),  # validation_matched: 3479 of 9815 "entailment"
    ("qnli", 0, "acc", 0.505),  # validation: 2761 of 5463 "not_entailment"
    ("wnli", 0, "acc", 0.563),  # validation: 40 of 71 "not_entailment"
    ("mmlu", 5, "acc", 0.25),
)


# --------------------------------------------------------------------------------------- checkpoint


def load_for_eval(ckpt, tokenizer=None, device="cpu", dtype="float32"):
    """(model, tokenizer) for a checkpoint (a path, or opened by weights.open_weights); the tokenizer found
    automatically unless given."""
    if dtype not in ("float32", "bfloat16"):
        raise UserError(f"--dtype {dtype}: use float32 or bfloat16")
    weights = opened(ckpt)
    spec = tokenizer or tokenizer_spec_of(weights)
    try:
        tok = load_tokenizer(spec)
    except UserError as e:
        if tokenizer:
            raise
        raise UserError(
            f"{weights.path} was made with tokenizer {spec!r}, which does not load here ({e}); "
            f"pass --tokenizer"
        ) from None
    model = load_model(weights, device=device, dtype=getattr(torch, dtype))
    if tok.vocab_size > model.config.vocab_size:
        raise UserError(
            f"tokenizer {tok.name} has {tok.vocab_size} tokens but {weights.path} only "
            f"{model.config.vocab_size} embeddings: pass the model's own tokenizer with --tokenizer"
        )
    return model, tok


# -------------------------------------------------------------------------------------------- tasks


def expand_tasks(spec) -> list:
    """--tasks -> [(name, shots or None for the task's default)]: 'paper' is PAPER_SUITE with its shots."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise UserError("--tasks is empty; give lm-eval task or group names, or 'paper'")
    paper, out = [(task, shots) for task, shots, _, _ in PAPER_SUITE], {}
    for name in names:  # a task named twice (e.g. "paper,piqa") runs once, with the first setting
        for task, shots in paper if name == "paper" else [(name, None)]:
            out.setdefault(task, shots)
    return list(out.items())


def go_offline_if_hub_unreachable():
    """With no route to the hub, switch datasets to offline mode before it is imported: cached datasets still
    load and a missing one fails at once instead of after network timeouts."""
    if os.environ.get("HF_DATASETS_OFFLINE") or os.environ.get("HF_HUB_OFFLINE") or "datasets" in sys.modules:
        return
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), 3.0
        ).close()
    except OSError:
        os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"


def load_tasks(specs, include_path=None, num_fewshot=None):
    """[(name, shots)] -> (TaskManager, loaded Task or Group per spec, {task name: Task}, {group name:
    Group}); shots (else num_fewshot, else the task's default) set on every task of an item. Fails with one
    line naming the offline fixes when a task's data cannot be fetched."""
    import difflib

    from lm_eval.tasks import TaskManager

    specs = [(name, num_fewshot if shots is None else shots) for name, shots in specs]
    if include_path and not Path(include_path).is_dir():
        raise UserError(f"--include_path {include_path}: no such folder")
    # the include_path index alone when it holds every name: building the full index takes seconds
    manager = TaskManager(include_path=include_path, include_defaults=False) if include_path else None
    if manager is None or not all(name in manager.all_tasks for name, _ in specs):
        manager = TaskManager(include_path=include_path)
    for name, _ in specs:  # every name first: a typo should not wait for the data of the tasks before it
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=1)
            raise UserError(
                f"unknown task '{name}'"
                + (f"; did you mean '{close[0]}'?" if close else "")
                + " (local task YAMLs: --include_path DIR)"
            )
    items, tasks, groups = [], {}, {}
    for name, shots in specs:
        try:
            loaded = manager.load([name])
        except ConnectionError as e:  # datasets' "Couldn't reach ... on the Hub", offline mode included
            raise UserError(
                f"task '{name}': its data could not be fetched ({str(e).splitlines()[0][:160]}); use "
                "local task YAMLs with --include_path DIR, or a local HF datasets cache with "
                "HF_DATASETS_OFFLINE=1 (HF_DATASETS_CACHE=<cache>)"
            ) from None
        for task in loaded["tasks"].values():
            if shots is not None:
                task.set_config(key="num_fewshot", value=shots)
        if name in loaded["groups"] or name in loaded["tasks"]:
            items.append(loaded["groups"].get(name) or loaded["tasks"][name])
        else:  # a tag: its tasks, each on its own
            items += loaded["tasks"].values()
        tasks.update(loaded["tasks"])
        groups.update(loaded["groups"])
    return manager, items, tasks, groups


def run_tasks(lm, loaded, limit=None, log_samples=False, bootstrap_iters=1000):
    """simple_evaluate of load_tasks' tasks on an LM -> (results, {task or group name: chance level or
    None})."""
    from lm_eval import simple_evaluate

    manager, items, tasks, groups = loaded
    results = simple_evaluate(
        model=lm,
        tasks=items,
        limit=limit,
        log_samples=log_samples,
        bootstrap_iters=bootstrap_iters,
        task_manager=manager,
    )
    return results, chance_levels(results, tasks, groups)


def chance_level(task, n_docs):
    """For a plain multiple-choice task: the better of a uniform guess and always picking the most frequent
    gold index, over the documents evaluated. None for other tasks (generation, perplexity, custom scoring
    like mc2)."""
    if task.OUTPUT_TYPE != "multiple_choice" or task.config.process_results is not None:
        return None
    uniform, golds = 0.0, Counter()
    docs = list(task.eval_docs)[:n_docs]
    for doc in docs:
        choices, gold = task.doc_to_choice(doc), task.doc_to_target(doc)
        gold = choices.index(gold) if isinstance(gold, str) and gold in choices else gold
        if not isinstance(gold, int):  # several gold answers, or a target outside the choices
            return None
        golds[gold] += 1
        uniform += 1 / len(choices)
    return max(uniform / len(docs), golds.most_common(1)[0][1] / len(docs)) if docs else None


def chance_levels(results, tasks, groups):
    """chance per task (computed from its documents, else PAPER_SUITE's) and per group (size-weighted
    mean)."""
    sizes = {name: results["n-samples"][name]["effective"] for name in tasks if name in results["n-samples"]}
    out = {name: chance_level(task, sizes.get(name, 0)) for name, task in tasks.items()}
    for name, group in groups.items():
        leaves = [t.task_name for t in group.get_all_tasks()]
        if all(out.get(t) is not None for t in leaves) and sum(sizes.get(t, 0) for t in leaves):
            out[name] = sum(out[t] * sizes[t] for t in leaves) / sum(sizes[t] for t in leaves)
    for name, _, _, chance in PAPER_SUITE:
        if out.get(name) is None and (name in tasks or name in groups):
            out[name] = chance
    return out


def results_table(results, chances) -> str:
    """Markdown: one line per metric of each top-level task (a group with a score: its aggregate only), the
    chance level beside it, and whether the score clears chance by more than two standard errors."""
    paper_metric = {name: metric for name, _, metric, _ in PAPER_SUITE}
    lines = [
        "| task | shots | metric | score | ± | chance | above chance? |",
        "|---|---|---|---|---|---|---|",
    ]
    members = {t for subtasks in results.get("group_subtasks", {}).values() for t in subtasks}
    todo = [name for name in results["results"] if name not in members]
    while todo:
        name = todo.pop(0)
        scores = results["results"].get(name) or results.get("groups", {}).get(name, {})
        metrics = [
            k for k, v in scores.items() if "," in k and "_stderr" not in k and isinstance(v, (int, float))
        ]
        if not metrics:  # a group without an aggregate: show its members
            todo = list(results.get("group_subtasks", {}).get(name, [])) + todo
            continue
        for key in metrics:
            metric = key.split(",")[0]
            if name in paper_metric and metric != paper_metric[name]:
                continue
            value, stderr = scores[key], scores.get(key.replace(",", "_stderr,", 1))
            stderr = stderr if isinstance(stderr, (int, float)) else None
            chance = chances.get(name) if metric.startswith("acc") else None
            verdict = (
                "—"
                if chance is None
                else "yes"
                if stderr is not None and value - chance > 2 * stderr
                else "no"
            )
            shots = results.get("n-shot", {}).get(name, "")
            stderr_text = f"{stderr:.4f}" if stderr is not None else "—"
            chance_text = f"{chance:.3f}" if chance is not None else "—"
            lines.append(
                f"| {name} | {shots} | {key} | {value:.4f} | {stderr_text} | {chance_text} | {verdict} |"
            )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- val loss


def eval_val_loss(model, ckpt, data_dir, tok, block_size=None, eval_tokens=None, batch_size=8):
    """train.py's val loss on the same fixed windows; block_size/eval_tokens default to the run's own
    settings (ckpt: a path, or opened by weights.open_weights)."""
    check_bins(data_dir, model.config.vocab_size, tok.hash)
    run = opened(ckpt).meta.get("train_config") or {}
    if block_size and block_size > model.config.block_size:
        raise UserError(
            f"--block_size {block_size} is longer than {ckpt}'s context of {model.config.block_size} "
            f"tokens; use at most that"
        )
    block_size = block_size or min(run.get("block_size", model.config.block_size), model.config.block_size)
    eval_tokens = eval_tokens or run.get("eval_tokens", EVAL_TOKENS)
    # float32, no TF32: the plain numbers
    loss = val_loss(model, data_dir, block_size, eval_tokens, batch_size, vocab_size=model.config.vocab_size)
    return {"val_loss": loss, "val_ppl": math.exp(loss), "block_size": block_size, "eval_tokens": eval_tokens}


# ---------------------------------------------------------------------------------------------- CLI


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="project .pt, run folder with ckpt.pt, HF folder or .gguf")
    p.add_argument("--tokenizer", help="override: gpt2, a tokenizer.json, a model folder or a .gguf")
    p.add_argument("--tasks", help="comma-separated lm-eval tasks or groups; 'paper' = the paper's suite")
    p.add_argument("--include_path", help="folder of extra task YAMLs (e.g. tests/tasks)")
    p.add_argument("--num_fewshot", type=int, help="few-shot examples for tasks without a fixed number")
    p.add_argument("--limit", type=float, help="documents per task (a fraction if < 1): for quick checks")
    p.add_argument("--batch_size", type=int, default=16, help="sequences per forward pass")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="float32", help="float32 or bfloat16 weights")
    p.add_argument("--out", help="write lm-eval's results dict (and val loss) here as JSON; a new file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--log_samples", action="store_true", help="keep every document's requests and responses")
    p.add_argument("--bootstrap_iters", type=int, default=1000, help="bootstrap samples for non-mean stderrs")
    p.add_argument("--val_data", help="token bins folder (prepare_owt.py): val loss on train.py's windows")
    p.add_argument("--block_size", type=int, help="val loss window (default: the run's training block size)")
    p.add_argument("--eval_tokens", type=int, help="val loss token budget (default: the run's eval_tokens)")
    args = p.parse_args(argv)
    if not args.tasks and not args.val_data:
        raise UserError("nothing to do: pass --tasks (e.g. paper, or piqa,boolq) and/or --val_data DIR")
    for name in ("batch_size", "block_size", "eval_tokens", "num_fewshot", "limit", "bootstrap_iters"):
        value, least = getattr(args, name), 0 if name in ("num_fewshot", "bootstrap_iters") else 1e-9
        if value is not None and value < least:
            raise UserError(f"--{name} {value}: must be {'at least 0' if least == 0 else 'positive'}")
    resolve_device(args.device)
    if args.out:  # before any evaluation: a path it cannot write should not cost one
        check_new_output(Path(args.out), args.overwrite, example="results.json")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.tasks:  # tasks first: a missing dataset or a typo fails before the model is loaded
        if not lm_eval_installed():
            raise UserError("--tasks needs lm-evaluation-harness: pip install -e '.[eval]' (lm-eval==0.4.13)")
        go_offline_if_hub_unreachable()
        logging.getLogger("lm_eval").setLevel(logging.ERROR)  # lm-eval's per-task notices drown the table
        loaded = load_tasks(expand_tasks(args.tasks), args.include_path, args.num_fewshot)
    weights = open_weights(args.ckpt)  # opened once: the model, its tokenizer and its run's settings
    model, tok = load_for_eval(weights, args.tokenizer, args.device, args.dtype)
    c = model.config
    print(
        f"{args.ckpt}: {c.arch}, {c.n_layer} layers, {model.num_params() / 1e6:.1f}M params, "
        f"block {c.block_size}, tokenizer {tok.name}",
        flush=True,
    )
    report = {}
    if args.val_data:
        sizes = args.block_size, args.eval_tokens, args.batch_size
        report["val"] = val = eval_val_loss(model, weights, args.val_data, tok, *sizes)
        print(
            f"val loss {val['val_loss']:.4f} (perplexity {val['val_ppl']:.2f}) on {args.val_data}: "
            f"{val['eval_tokens']} tokens in windows of {val['block_size']}",
            flush=True,
        )
    if args.tasks:
        limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
        lm = InherituneLM(model, tok, batch_size=args.batch_size)
        results, chances = run_tasks(lm, loaded, limit, args.log_samples, args.bootstrap_iters)
        results["config"].update(checkpoint=str(args.ckpt), chance=chances)
        print(results_table(results, chances))
        report.update(results)
    if args.out:
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2, default=str)))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    cli(main)
