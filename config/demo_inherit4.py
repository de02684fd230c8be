# The CPU demo's Inheritune v2 growth loop: start from the reference's first 4 layers, +2 per round, same
# recipe.
base = "demo_ref8.py"
out_dir = "out/demo/inherit"
ref = "out/demo/ref8/ckpt.pt"
grow = True
n_layer = 4
