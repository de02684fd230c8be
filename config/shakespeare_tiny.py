# A tiny GPT-2 on the Shakespeare plays: seconds on a CPU. Data: python prepare_owt.py --source shakespeare
out_dir = "out/shakespeare_tiny"
n_layer = 4
n_head = 4
n_embd = 128
block_size = 64
batch_size = 16
max_iters = 100
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 10
eval_interval = 25
eval_tokens = 8192
checkpoint_interval = 50
