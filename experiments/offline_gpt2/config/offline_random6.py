# Baseline for offline_inherit6.py: 6 layers, the same recipe, random initialisation.
# python train.py experiments/offline_gpt2/config/offline_random6.py
base = "offline_ref12.py"
out_dir = "out/offline_random6"
n_layer = 6
