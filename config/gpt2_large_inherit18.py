# Inheritune v2 on GPT-2 large: inherit the first 18 of the reference's 36 layers (embeddings, position table, final
# norm and head included) and train with the reference's own recipe (config/gpt2_large.py); if the mean of the last 3
# val losses is worse than the reference's (measured here on the same val windows), grow by 2 layers and start
# again from the reference.
# torchrun --nproc_per_node=3 train.py config/gpt2_large_inherit18.py
base = "gpt2_large.py"  # the recipe: steps, batch, optimizer, schedule, evaluation
out_dir = "out/gpt2_large_inherit18"
init_from = "inherit"            # every round inherits from ref (never from the previous round)
ref = "out/gpt2_large/ckpt.pt"     # or OpenAI's GPT-2 as a HF folder (config.json + model.safetensors)
grow = True
n_layer = 18                     # start depth
grow_step = 2
grow_last_k = 3                  # noise-aware: mean of the last 3 evaluations ...
grow_tolerance = 0.0             # ... must be <= the reference's val loss + this
