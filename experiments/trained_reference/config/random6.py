# Baseline for grow6.py's first round: 6 layers, ref12.py's recipe, random initialisation.
# python train.py experiments/trained_reference/config/random6.py --seed=1
base = "ref12.py"
out_dir = "out/trained_reference/random6"
n_layer = 6
