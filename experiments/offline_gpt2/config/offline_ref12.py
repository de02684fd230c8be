# The GPT-2 offline-English study (experiments/offline_gpt2/README.md): the reference, a 12-layer GPT-2 (width
# 512) trained from scratch on ~29M tokens of English that needs no network
# (experiments/offline_gpt2/offline_english.py -> prepare_owt.py --val_fraction 0.02).
# python train.py experiments/offline_gpt2/config/offline_ref12.py
out_dir = "out/offline_ref12"
data_dir = "data/offline_english"
n_layer = 12
n_head = 8
n_embd = 512
block_size = 1024
batch_size = 32  # 32K tokens per step
micro_batch_size = 32
max_iters = 1500  # 49M tokens, ~1.7 epochs
learning_rate = 1e-3
min_lr = 1e-5
warmup_iters = 150
eval_tokens = 262_144  # 256 fixed windows of val.bin
log_interval = 25
checkpoint_interval = 500
compile = True
