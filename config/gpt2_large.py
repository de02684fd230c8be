# Reference from scratch: GPT-2 large (36 layers, 774M), the paper's recipe (Sanyal et al. 2024, Inheritune
# v2).
# torchrun --nproc_per_node=3 train.py config/gpt2_large.py
base = "gpt2_owt.py"
out_dir = "out/gpt2_large"
n_layer, n_head, n_embd = 36, 20, 1280
batch_size = 126  # 129K tokens per step (the paper's "128K"); 126 splits evenly over 1, 2 or 3 GPUs
micro_batch_size = 21  # per GPU; must divide 126 / world
learning_rate = 2e-4
