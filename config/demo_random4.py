# The CPU demo's baseline: 4 layers, the same recipe and steps, random initialisation.
base = "demo_ref8.py"
out_dir = "out/demo/random4"
n_layer = 4
