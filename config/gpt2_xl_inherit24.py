# Inheritune v2 on GPT-2 xl: inherit the first 24 of the reference's 48 layers (embeddings, position table,
# final norm and head included) and train with the reference's own recipe (config/gpt2_xl.py); if the mean of
# the last 3 val losses (grow_last_k) is worse than the reference's on the same val windows, grow by 2 layers
# (grow_step) and start again from the reference.
# torchrun --nproc_per_node=3 train.py config/gpt2_xl_inherit24.py
base = "gpt2_xl.py"
out_dir = "out/gpt2_xl_inherit24"
ref = "out/gpt2_xl/ckpt.pt"  # or OpenAI's GPT-2 as a HF folder (config.json + model.safetensors)
grow = True  # every round inherits from ref, never from the previous round
n_layer = 24  # start depth
