# gpt2_large_inherit18.py at the paper's 16K-token batch: the growth loop from 18 layers of
# gpt2_large_16k.py's run.
# torchrun --nproc_per_node=2 train.py config/gpt2_large_16k_inherit18.py
base = "gpt2_large_16k.py"
out_dir = "out/gpt2_large_16k_inherit18"
ref = "out/gpt2_large_16k/ckpt.pt"
grow = True
n_layer = 18
