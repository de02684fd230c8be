# Inheritune on LLaMA-2 7B (32 layers): inherit the first 7 blocks (plus embeddings, final norm and head).
# Reference: the HF folder of meta-llama/Llama-2-7b-hf, downloaded beforehand (license required).
# python prepare_owt.py --source <corpus> --tokenizer checkpoints/Llama-2-7b-hf --out data/llama2_1b
# torchrun --nproc_per_node=1 train.py config/llama2_7b_inherit7.py
out_dir = "out/llama2_7b_inherit7"
data_dir = "data/llama2_1b"
init_from = "inherit"
ref = "checkpoints/Llama-2-7b-hf"
n_layer = 7
block_size = 2048
batch_size = 64             # 131K tokens per step
micro_batch_size = 4
max_iters = 61_000
learning_rate = 3e-4
min_lr = 3e-5
warmup_iters = 1000
weight_decay = 0.1
beta1, beta2 = 0.9, 0.95
grad_clip = 1.0
eval_interval = 1000
eval_tokens = 2_097_152
log_interval = 10
checkpoint_interval = 1000
compile = True
