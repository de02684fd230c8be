"""Val loss of a reference's first k blocks (+ its final norm and head) before any training, for several k.

    python experiments/smollm2/step0_by_depth.py --ref SmolLM2-135M-Instruct.Q4_1.gguf \
        --data data/smollm2_offline \
        --depths 5,10,15,20,25,30

Why: the step-0 loss of an inherited model says how usable the truncated stack is as it stands. For our GPT-2
references it is far below ln(vocab); for SmolLM2-135M the middle of the stack read through the final norm and
the tied head is confidently wrong (above ln(vocab)), which this prints depth by depth. """

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from inherit import inherit_layers  # noqa: E402
from inheritune.data import val_loss  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", required=True)
    p.add_argument("--data", required=True, help="token bins made with the reference's tokenizer")
    p.add_argument("--depths", default="5,10,15,20,25,30")
    p.add_argument("--block_size", type=int, default=1024)
    p.add_argument("--eval_tokens", type=int, default=65536)
    args = p.parse_args()
    torch.manual_seed(0)
    print("| first k blocks | val loss (step 0) |\n|---|---|")
    for k in map(int, args.depths.split(",")):
        model, _ = inherit_layers(args.ref, n_layer=k, dtype=torch.float32)
        model.crop_block_size(args.block_size)
        loss = val_loss(model, args.data, args.block_size, args.eval_tokens, 8)
        print(f"| {k} | {loss:.3f} |", flush=True)
    print(f"ln(vocab) = {math.log(model.config.vocab_size):.3f}")


if __name__ == "__main__":
    main()
