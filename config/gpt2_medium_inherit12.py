# Inheritune v2 on GPT-2 medium: inherit the first 12 of the reference's 24 layers (embeddings, position
# table, final norm and head included) and train with the reference's own recipe (config/gpt2_medium.py); if
# the mean of the last 3 val losses (grow_last_k) is worse than the reference's on the same val windows, grow
# by 2 layers (grow_step) and start again from the reference.
# torchrun --nproc_per_node=3 train.py config/gpt2_medium_inherit12.py
base = "gpt2_medium.py"
out_dir = "out/gpt2_medium_inherit12"
ref = "out/gpt2_medium/ckpt.pt"  # or OpenAI's GPT-2 as a HF folder (config.json + model.safetensors)
grow = True  # every round inherits from ref, never from the previous round
n_layer = 12  # start depth
grow_max_layer = 16  # the paper grows GPT-2 medium 12 -> 14 -> 16
