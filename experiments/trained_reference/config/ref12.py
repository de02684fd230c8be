# The trained reference (experiments/trained_reference/README.md): offline_ref12.py's 12-layer GPT-2 (width
# 512) trained twice as long, to the end of a 3000-step schedule of 32K tokens (98M tokens, ~3.4 epochs).
# python train.py experiments/trained_reference/config/ref12.py
base = "../../offline_gpt2/config/offline_ref12.py"
out_dir = "out/trained_reference/ref12"
max_iters = 3000
warmup_iters = 300
checkpoint_interval = 1000
