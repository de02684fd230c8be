#!/usr/bin/env bash
# Issue 8 on a 2-GPU lease (nvidia-h200-x2): bench.py's measurements, one GPU per shape group so each
# measurement has its GPU to itself; three calls of <= 10 min, in any order (nothing is kept between them).
#   bash bench/gpu_perf.sh small   # GPU0: GPT-2 124M variants; GPU1: GPT-2 350M variants
#   bash bench/gpu_perf.sh large   # GPU0: GPT-2 774M variants; GPU1: the OpenLLaMA-3B 13-layer shape
#   bash bench/gpu_perf.sh ddp     # both GPUs: DDP scaling at 124M and 350M (compare with "small"'s m32a4 rows)
#   bash bench/gpu_perf.sh check   # the loss-curve check on real text: plain (eager) path against the fast variants
#   bash bench/gpu_perf.sh profile # bench/profile_step.py at 124M (GPU0) and 350M (GPU1): step time by kernel class
# On a 4-GPU lease (nvidia-h200-x4), one call measures every shape, one GPU each (~9 min):
#   bash bench/gpu_perf.sh quad    # GPU0 774M, GPU1 OpenLLaMA-13L, GPU2 350M, GPU3 124M (the Q* variant lists)
#   bash bench/gpu_perf.sh explore # GPU0 profile (124M, 350M), GPU1-2 the loss check's two seeds, GPU3 compile modes
#   bash bench/gpu_perf.sh seeds   # GPU2, GPU3: the loss check at seeds 1, 2; GPU0+1: DDP at 124M and 350M, then seeds 3, 4
#   bash bench/gpu_perf.sh next    # untested levers, each against its baseline on the same GPU: inductor's coordinate-
#                                  # descent tuning of its Triton kernels (GPU0 124M, GPU1 350M, GPU2 774M); GPU3: the
#                                  # loss with a written-out log-sum-exp (one online pass), loss alone and whole step
#   bash bench/gpu_perf.sh tuned   # coordinate-descent tuning, plain then tuned with each one's wall time: GPU0 the
#                                  # OpenLLaMA-13L shape, GPU1 124M (compile cost); GPU2: 124M at m128a1
#   bash bench/gpu_perf.sh rows    # one GPU: the loss alone at 65536/42000/32768 rows, this tree's and bench/loss_variant.py's
#                                  # row-chunked candidate; then both in the 124M m64a2 step
#   bash bench/gpu_perf.sh sweep   # GPU0-2: 124M, 350M, 774M variants (S*), then a profile (P*); GPU3: a before row
#                                  # from the checkout in BEFORE (carry it), then the loss check (CHECK variants)
# Override the variant lists with V124=..., V350=..., V774=..., VLLAMA=... (see bench.py for the grammar).
set -uo pipefail
case "${1:-}" in small|large|ddp|check|profile|quad|explore|sweep|seeds|next|tuned|rows) ;;
  *) echo "usage: $0 small|large|ddp|check|profile|quad|explore|sweep|seeds|next|tuned|rows"; exit 2 ;; esac  # before the clock starts
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8
OUT=${OUT:-/root/stash/out}
mkdir -p "$OUT"
W=/root/stash/bench
LIMIT=${LIMIT:-560}
# the call's clock: bench.py starts each train.py in a session of its own, so a killed bench.py leaves it running;
# from LIMIT on, kill them all by name, again and again (these scripts assume the machine is theirs)
( sleep "$LIMIT"; while :; do pkill -KILL -f "bench.py|profile_step.py|train.py"; sleep 2; done ) >/dev/null 2>&1 &
watchdog=$!
wait_runs() { local r; r=$(jobs -p | grep -v "^$watchdog$"); [ -z "$r" ] || wait $r; }  # not the clock
V124=${V124:-m16a1,m16a8,m32a4,m32a4+compile_scope=blocks,m32a4+attention=cudnn}
V350=${V350:-m16a1,m16a8,m32a4,m32a4+attention=cudnn}
V774=${V774:-m16a4+compile_scope=blocks,m8a1,m16a4}  # whole-model compile: ~2.5 min each at 36 layers
VLLAMA=${VLLAMA:-m4a8+compile_scope=blocks,m8a4+compile_scope=blocks,m8a4}
B=compile_scope=blocks C=attention=cudnn
Q124=${Q124:-m32a4+$B,m32a4+$C,m32a4+$B+$C,m64a2+$C,m64a2+$B+$C}
Q350=${Q350:-m16a1,m32a4+$B,m32a4+$B+$C,m32a4,m32a4+$C}
Q774=${Q774:-m21a6+$B,m16a4+$B,m16a4+$B+$C,m32a2+$B+$C}
QLLAMA=${QLLAMA:-m4a8+$B,m8a4+$B,m8a4}  # no cuDNN: OpenLLaMA's head dimension is 100
bench() {  # GPU NAME ARGS...
  local gpu=$1 name=$2; shift 2
  CUDA_VISIBLE_DEVICES=$gpu python3 bench.py --work "$W/$name" --json "$OUT/$name.jsonl" "$@" > "$OUT/$name.txt" 2>&1
}
check() {  # GPU SEED [VARIANTS]: the loss-curve check on real text (carry .stash/offline_english_bins.tar.xz). The bf16 noise
  # floor is eager against eager with another micro-batch split (same math, other rounding); a compiled variant
  # should sit inside it.
  local g=$1 S=$2 v
  v=${3:-m16a4-eager,m32a2-eager,m16a4,m16a4+$B,m32a2+$B+$C}
  mkdir -p "$W/data$g" && tar -xJf .stash/offline_english_bins.tar.xz -C "$W/data$g"
  bench $g check_124m_seed$S --shapes gpt2-124m --check_loss "$W/data$g" --steps 200 --variants "${v//,/+seed=$S,}+seed=$S"
}
profile() {  # GPU SHAPE "VARIANTS": where each step's time goes (bench/profile_step.py)
  local g=$1 shape=$2 v
  for v in $3; do
    CUDA_VISIBLE_DEVICES=$g python3 bench/profile_step.py --shape $shape --variant $v --work "$W/prof$g" --top 25
  done >> "$OUT/profile_$shape.txt" 2>&1
}
tune() {  # GPU SHAPE VARIANT TIMEOUT: the variant plain, then with inductor's coordinate-descent tuning; each
  # measurement's wall seconds (compile, then 60 steps) go in its .txt, so their difference is the tuning's compile cost
  local t=$SECONDS
  bench $1 base_$2 --shapes $2 --variants $3 --timeout $4; echo "wall $((SECONDS - t)) s" >> "$OUT/base_$2.txt"
  t=$SECONDS
  TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1 bench $1 tuned_$2 --shapes $2 --variants $3 --timeout $(($4 * 2))
  echo "wall $((SECONDS - t)) s" >> "$OUT/tuned_$2.txt"
}
case "${1:-}" in
small) bench 0 gpt2_124m --shapes gpt2-124m --variants "$V124" --timeout 240 &
       bench 1 gpt2_350m --shapes gpt2-350m --variants "$V350" --timeout 300 & ;;
large) bench 0 gpt2_774m --shapes gpt2-774m --variants "$V774" --timeout 330 &
       bench 1 openllama3b_13l --shapes openllama3b-13l --variants "$VLLAMA" --timeout 400 & ;;
ddp)   bench 0,1 ddp_124m --shapes gpt2-124m --variants m32a4 --gpus 2
       bench 0,1 ddp_350m --shapes gpt2-350m --variants m32a4,m32a4+compile_scope=blocks --gpus 2 ;;
check) check 0 1337 & check 1 7 & ;;
profile) profile 0 gpt2-124m "m16a1 m64a2+$C" & profile 1 gpt2-350m "m16a1 m32a4+$B+$C" & ;;
explore) ( profile 0 gpt2-124m "m16a1 m64a2+$C"; profile 0 gpt2-350m "m16a1" ) &
         check 1 1337 & check 2 7 &
         bench 3 modes_124m --shapes gpt2-124m --timeout 200 --variants \
           "m16a1+$B+compile_mode=max-autotune-no-cudagraphs,m16a1+compile_mode=reduce-overhead,m32a4+$B+compile_mode=max-autotune-no-cudagraphs" & ;;
sweep) ( bench 0 gpt2_124m --shapes gpt2-124m --variants "${S124:-m16a1,m32a4,m64a2}" --timeout 150
         profile 0 gpt2-124m "${P124:-m64a2}" ) &
       ( bench 1 gpt2_350m --shapes gpt2-350m --variants "${S350:-m16a1,m32a4,m32a4+$B}" --timeout 150
         profile 1 gpt2-350m "${P350:-m32a4+$B}" ) &
       ( bench 2 gpt2_774m --shapes gpt2-774m --variants "${S774:-m32a2+$B,m16a4+$B}" --timeout 200
         profile 2 gpt2-774m "${P774:-m32a2+$B}" ) &
       ( [ -z "${BEFORE:-}" ] || bench 3 before_124m --repo "$BEFORE" --shapes gpt2-124m --variants m64a2 --timeout 150
         check 3 1337 "${CHECK:-m16a4-eager,m16a4,m32a2+$B}" ) & ;;
seeds) V=${CHECK:-m16a4-eager,m16a4,m32a2+$B}
       check 2 1 "$V" & check 3 2 "$V" &
       ( bench 0,1 ddp_124m --shapes gpt2-124m --variants m64a2 --gpus 2 --timeout 150
         bench 0,1 ddp_350m --shapes gpt2-350m --variants m32a4 --gpus 2 --timeout 180
         check 0 3 "$V" & check 1 4 "$V" & wait ) & ;;
next)  tune 0 gpt2-124m m64a2 120 & tune 1 gpt2-350m m32a4 150 & tune 2 gpt2-774m m32a2+$B 180 &
       ( C1=$(python3 bench/loss_variant.py online /root/stash/online) || exit 1  # this tree, loss rewritten
         CUDA_VISIBLE_DEVICES=3 python3 bench/loss_step.py --repo $C1 > "$OUT/loss_step.txt" 2>&1
         bench 3 online_124m --repo $C1 --shapes gpt2-124m --variants m64a2 --timeout 120
         bench 3 plain_124m --shapes gpt2-124m --variants m64a2 --timeout 120 ) & ;;  # its baseline, same GPU
tuned) tune 0 openllama3b-13l m8a4+$B 240 & tune 1 gpt2-124m m64a2 120 &
       bench 2 gpt2_124m_m128 --shapes gpt2-124m --variants m128a1 --timeout 150 & ;;
rows)  C1=$(python3 bench/loss_variant.py chunked $W/chunked) || exit 1
       for r in 65536 42000 32768; do  # the loss alone at 124M m64a2's size, then below 2**31 elements
         CUDA_VISIBLE_DEVICES=0 python3 bench/loss_step.py --rows $r --repo $C1
       done > "$OUT/loss_rows.txt" 2>&1
       bench 0 chunked_124m --repo $C1 --shapes gpt2-124m --variants m64a2 --timeout 140
       bench 0 plain_124m --shapes gpt2-124m --variants m64a2 --timeout 140 ;;
quad)  bench 0 gpt2_774m --shapes gpt2-774m --variants "$Q774" --timeout 200 &
       bench 1 openllama3b_13l --shapes openllama3b-13l --variants "$QLLAMA" --timeout 250 &
       bench 2 gpt2_350m --shapes gpt2-350m --variants "$Q350" --timeout 150 &
       bench 3 gpt2_124m --shapes gpt2-124m --variants "$Q124" --timeout 150 & ;;
esac
wait_runs
pkill -P $watchdog 2>/dev/null; kill $watchdog 2>/dev/null  # its sleep too: it holds the call's output open
for f in "$OUT"/*.txt; do echo "== $f"; grep "^|\|GFLOP\|^logits\|error\|loss check\|profiled\|^wall" "$f" | tail -n 40; done
