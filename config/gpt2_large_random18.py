# Baseline for gpt2_large_inherit18.py: the same depth (18 layers) and recipe, random initialisation.
# torchrun --nproc_per_node=3 train.py config/gpt2_large_random18.py
base = "gpt2_large.py"
out_dir = "out/gpt2_large_random18"
n_layer = 18
