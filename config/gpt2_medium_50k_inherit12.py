# gpt2_medium_inherit12.py at the paper's ~50K-token batch: the growth loop from 12 layers of
# gpt2_medium_50k.py's run.
# torchrun --nproc_per_node=3 train.py config/gpt2_medium_50k_inherit12.py
base = "gpt2_medium_50k.py"
out_dir = "out/gpt2_medium_50k_inherit12"
ref = "out/gpt2_medium_50k/ckpt.pt"
grow = True
n_layer = 12
grow_max_layer = 16
