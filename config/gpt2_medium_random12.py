# Baseline for gpt2_medium_inherit12.py: the same depth (12 layers) and recipe, random initialisation.
# torchrun --nproc_per_node=3 train.py config/gpt2_medium_random12.py
base = "gpt2_medium.py"
out_dir = "out/gpt2_medium_random12"
n_layer = 12
