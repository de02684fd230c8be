# The CPU demo's baseline: 4 layers, the same recipe and steps, random initialisation.
exec(open("config/demo_ref8.py").read())
out_dir = "out/demo/random4"
n_layer = 4
