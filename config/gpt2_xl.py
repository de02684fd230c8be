# Reference from scratch: GPT-2 XL (48 layers, 1.5B), the paper's recipe (Sanyal et al. 2024, Inheritune v2),
# with GPT-2 large's batch (129K tokens per step).
# torchrun --nproc_per_node=3 train.py config/gpt2_xl.py
base = "gpt2_large.py"
out_dir = "out/gpt2_xl"
n_layer, n_head, n_embd = 48, 25, 1600
micro_batch_size = 7  # per GPU; must divide 126 / world
learning_rate = 1.5e-4
