# The same-depth random-init baseline of gpt2_large_16k_inherit18.py.
# torchrun --nproc_per_node=2 train.py config/gpt2_large_16k_random18.py
base = "gpt2_large_16k.py"
out_dir = "out/gpt2_large_16k_random18"
n_layer = 18
