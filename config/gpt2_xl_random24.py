# Baseline for gpt2_xl_inherit24.py: the same depth (24 layers) and recipe, random initialisation.
# torchrun --nproc_per_node=3 train.py config/gpt2_xl_random24.py
base = "gpt2_xl.py"
out_dir = "out/gpt2_xl_random24"
n_layer = 24
