# The reference's first 6 layers (and its embeddings, final norm and tied head), trained with its recipe;
# --kd_ratio=R distils from it as well (the teacher defaults to ref).
# python train.py experiments/distill/config/inherit6.py --kd_ratio=0.5 --seed=1 \
#     --out_dir=out/distill/inherit6_kd0.5_s1
base = "ref12.py"
out_dir = "out/distill/inherit6"
init_from = "inherit"
ref = "out/distill/ref12/ckpt.pt"
n_layer = 6
