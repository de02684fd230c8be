# Inheritune v2 on GPT-2 medium: inherit the first 12 of the reference's 24 layers (embeddings, position table, final
# norm and head included) and train with the reference's own recipe (config/gpt2_medium.py); if the mean of the last 3
# val losses is worse than the reference's (measured here on the same val windows), grow by 2 layers and start
# again from the reference.
# torchrun --nproc_per_node=3 train.py config/gpt2_medium_inherit12.py
base = "gpt2_medium.py"  # the recipe: steps, batch, optimizer, schedule, evaluation
out_dir = "out/gpt2_medium_inherit12"
init_from = "inherit"            # every round inherits from ref (never from the previous round)
ref = "out/gpt2_medium/ckpt.pt"     # or OpenAI's GPT-2 as a HF folder (config.json + model.safetensors)
grow = True
n_layer = 12                     # start depth
grow_step = 2
grow_max_layer = 16              # the paper grows GPT-2 medium 12 -> 14 -> 16
grow_last_k = 3                  # noise-aware: mean of the last 3 evaluations ...
grow_tolerance = 0.0             # ... must be <= the reference's val loss + this
