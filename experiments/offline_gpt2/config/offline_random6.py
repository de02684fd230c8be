# Baseline for config/offline_inherit6.py: 6 layers, the same recipe, random initialisation.
base = "offline_ref12.py"
out_dir = "out/offline_random6"
n_layer = 6
