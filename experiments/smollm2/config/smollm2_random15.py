# The same-depth baseline for smollm2_inherit15.py: SmolLM2-135M's shape at 15 layers, randomly initialised,
# trained with the identical recipe and data.
# python train.py experiments/smollm2/config/smollm2_random15.py
base = "smollm2_inherit15.py"
out_dir = "out/smollm2_random15"
init_from = "scratch"
ref = None
arch = "llama"
n_head = 9
n_kv_head = 3
n_embd = 576
intermediate_size = 1536
tie_embeddings = True
bias = False
rope_theta = 100000.0
