# The published code's inheritance: the reference's first 6 blocks and its (tied) embedding/head, with the
# position embedding wpe and the final norm ln_f freshly initialised; trained with ref12.py's recipe. The
# starting point is written by inherit.py first:
# python inherit.py --ref out/trained_reference/ref12/ckpt.pt --n_layer 6 --reinit wpe,ln_f --seed 1 \
#     --out out/trained_reference/paper6_init_s1.pt
# python train.py experiments/trained_reference/config/paper6.py --seed=1 \
#     --ref=out/trained_reference/paper6_init_s1.pt
base = "ref12.py"
out_dir = "out/trained_reference/paper6"
init_from = "pretrained"
ref = "out/trained_reference/paper6_init_s1.pt"  # seed 1's; --ref= for the others
n_layer = 6
