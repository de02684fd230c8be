"""The plumbing the scripts share, below the method (model.py, weights.py, inherit.py, growth.py and the
scripts at the top of the repository). Nothing here imports the method: each module imports only the standard
library, third-party packages and modules of this package.

- util: user errors and the one-line CLI contract, config files and --key=value overrides, atomic writes,
  plots
- runtime: where a run executes: device, torchrun's process group, autocast, the SIGTERM vote
- data: the token-bin format read back: meta.json checks, training and validation windows, val loss
- tokenizer: GPT-2 BPE offline, HF tokenizer.json, a GGUF's own vocabulary
- fp8: float8 matmuls for training (train.py's fp8=True)
- lm: lm-evaluation-harness's model interface over our GPT (eval.py)
"""
