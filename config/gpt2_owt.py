# The recipe the GPT-2 references share (Sanyal et al. 2024, Inheritune v2): OpenWebText, 100K steps, cosine
# from a 2K-step warmup, 1M fixed val tokens. Each size (gpt2_medium/large/xl.py) adds its shape, batch and
# learning rate.
data_dir = "data/openwebtext"
max_iters = 100_000
min_lr = 1e-5
warmup_iters = 2000
eval_interval = 1000
eval_tokens = 1_048_576  # fixed val budget: 1024 windows of 1024 tokens, the same for every run
checkpoint_interval = 1000
compile = True
