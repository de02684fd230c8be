# The CPU demo's reference (demo.py): an 8-layer GPT-2 trained from scratch on the Shakespeare plays,
# tokenized with a 1024-token BPE, sized to train in about two minutes on 2 CPU cores.
out_dir = "out/demo/ref8"
data_dir = "data/demo_shakespeare"
n_layer = 8
n_head = 4
n_embd = 96
block_size = 128
batch_size = 16  # 2048 tokens per step
micro_batch_size = 16
max_iters = 600
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 30
eval_interval = 50
eval_tokens = 16_384  # 128 fixed windows of val.bin
log_interval = 50
checkpoint_interval = 200
device = "cpu"
