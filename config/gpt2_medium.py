# Reference from scratch: GPT-2 medium (24 layers, 350M), the paper's recipe (Sanyal et al. 2024, Inheritune
# v2).
# python prepare_owt.py && torchrun --nproc_per_node=3 train.py config/gpt2_medium.py
base = "gpt2_owt.py"
out_dir = "out/gpt2_medium"
n_layer, n_head, n_embd = 24, 16, 1024
batch_size = 384  # 393K tokens per step on any number of GPUs
micro_batch_size = 16  # per GPU; divides 384 / world for 1, 2, 3 and 4 GPUs
learning_rate = 3e-4
