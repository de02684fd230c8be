# Inheritune v2 on GPT-2 large: inherit the first 18 of the reference's 36 layers (embeddings, position table, final
# norm and head included), train with the reference's recipe; if the mean of the last 3 val losses is worse than
# the reference's (measured here on the same val windows), grow by 2 layers and start again from the reference.
# torchrun --nproc_per_node=3 train.py config/gpt2_large_inherit18.py      (reference: config/gpt2_large.py)
out_dir = "out/gpt2_large_inherit18"
data_dir = "data/openwebtext"
ref = "out/gpt2_large/ckpt.pt"     # or OpenAI's GPT-2 as a HF folder (config.json + model.safetensors)
init_from = "inherit"         # every round inherits from ref (never from the previous round)
grow = True
n_layer = 18                     # start depth
grow_step = 2
grow_last_k = 3                  # noise-aware: mean of the last 3 evaluations ...
grow_tolerance = 0.0             # ... must be <= the reference's val loss + this
block_size = 1024
batch_size = 126
micro_batch_size = 21
max_iters = 100_000              # the reference's steps
learning_rate = 2e-4
min_lr = 1e-5
warmup_iters = 2000
weight_decay = 0.1
beta1, beta2 = 0.9, 0.95
grad_clip = 1.0
eval_interval = 1000
eval_tokens = 1_048_576
log_interval = 10
checkpoint_interval = 1000
compile = True
