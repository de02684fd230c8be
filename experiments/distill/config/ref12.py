# The distillation study's reference and teacher (experiments/distill/README.md): the trained-reference
# study's 12-layer GPT-2 (width 512, 3000 steps of 32K tokens), trained again here so that every row of the
# study learns from the same weights.
# python train.py experiments/distill/config/ref12.py
base = "../../trained_reference/config/ref12.py"
out_dir = "out/distill/ref12"
