# Inheritune v2 against offline_ref12.py: start from its first 6 layers, +2 per round, same recipe.
# python train.py experiments/offline_gpt2/config/offline_inherit6.py   (after offline_ref12.py has run)
base = "offline_ref12.py"
out_dir = "out/offline_inherit6"
init_from = "inherit"
ref = "out/offline_ref12/ckpt.pt"
grow = True
n_layer = 6
