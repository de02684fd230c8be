# The Inheritune v2 growth loop against ref12.py: inherit its first 6 layers, train with its recipe, +2 layers
# per round until the mean of the last 3 val losses matches the reference's own.
# python train.py experiments/trained_reference/config/grow6.py --seed=1   (after ref12.py has run)
base = "ref12.py"
out_dir = "out/trained_reference/grow6"
init_from = "inherit"
ref = "out/trained_reference/ref12/ckpt.pt"
grow = True
n_layer = 6
