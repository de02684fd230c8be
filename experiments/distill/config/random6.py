# 6 layers from random initialisation, the reference's recipe; --kd_ratio=R
# --teacher=out/distill/ref12/ckpt.pt distils from the reference.
# python train.py experiments/distill/config/random6.py --seed=1 --out_dir=out/distill/random6_kd0_s1
base = "ref12.py"
out_dir = "out/distill/random6"
n_layer = 6
