# The same-depth random-init baseline of gpt2_medium_50k_inherit12.py.
# torchrun --nproc_per_node=3 train.py config/gpt2_medium_50k_random12.py
base = "gpt2_medium_50k.py"
out_dir = "out/gpt2_medium_50k_random12"
n_layer = 12
