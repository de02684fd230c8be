# Inheritune v2 on GPT-2 large: inherit the first 18 of the reference's 36 layers (embeddings, position table,
# final norm and head included) and train with the reference's own recipe (config/gpt2_large.py); if the mean
# of the last 3 val losses (grow_last_k) is worse than the reference's on the same val windows, grow by 2
# layers (grow_step) and start again from the reference.
# torchrun --nproc_per_node=3 train.py config/gpt2_large_inherit18.py
base = "gpt2_large.py"
out_dir = "out/gpt2_large_inherit18"
ref = "out/gpt2_large/ckpt.pt"  # or OpenAI's GPT-2 as a HF folder (config.json + model.safetensors)
grow = True  # every round inherits from ref, never from the previous round
n_layer = 18  # start depth
