# Inheritune on OpenLLaMA-3B v1 (26 layers): inherit the first 13 (~1.5B), train 8 epochs of a 1B-token set.
# Reference: the HF folder of openlm-research/open_llama_3b (config.json + weights), downloaded beforehand.
# python prepare_owt.py --source <your 1B-token corpus> --tokenizer checkpoints/open_llama_3b \
#     --out data/openllama_1b
# torchrun --nproc_per_node=1 train.py config/openllama3b_inherit13.py
out_dir = "out/openllama3b_inherit13"
data_dir = "data/openllama_1b"
init_from = "inherit"
ref = "checkpoints/open_llama_3b"
n_layer = 13
block_size = 2048  # with the default batch of 64 sequences: 131K tokens per step
max_iters = 61_000  # 8 epochs x 1B tokens / 131K tokens per step
learning_rate = 3e-4
min_lr = 3e-5
warmup_iters = 1000
eval_interval = 1000
eval_tokens = 2_097_152  # 1024 windows of 2048 tokens
checkpoint_interval = 1000
compile = True
