# random6.py trained twice as many steps (6000, warm-up scaled with them): about the compute of the reference
# plus an inherited 6-layer run.
# python train.py experiments/trained_reference/config/random6_2x.py --seed=1
base = "random6.py"
out_dir = "out/trained_reference/random6_2x"
max_iters = 6000
warmup_iters = 600
