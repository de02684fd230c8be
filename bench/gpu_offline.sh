#!/usr/bin/env bash
# The lease-scale GPU reproduction of the paper's GPT-2 experiment (issue 7), on a 2-GPU machine, in two calls
# made back to back (checkpoints live in $STASH, which survives between calls only while the machine stays warm):
#   bash bench/gpu_offline.sh phase1   # DDP check; GPU0: the 12-layer reference; GPU1: random-init 6-layer baselines
#   bash bench/gpu_offline.sh phase2   # GPU0: the growth loop from 6 layers; GPU1: inherited 6 layers, seeds 2 and 3
# Data: .stash/offline_english_bins.tar.xz (bench/offline_english.py -> prepare_owt.py --val_fraction 0.02).
# Every run is resumable: rerunning a phase continues unfinished runs from their last checkpoint.
set -uo pipefail
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
STASH=${STASH:-/root/stash}
OUT=${OUT:-$STASH/out}
LIMIT=${LIMIT:-540}  # seconds; runs still going are stopped (SIGTERM -> checkpoint) so results come back
mkdir -p "$STASH" "$OUT"
DATA="--data_dir=$STASH/data"
[ -f "$STASH/data/meta.json" ] || { mkdir -p "$STASH/data" && tar -xJf .stash/offline_english_bins.tar.xz -C "$STASH/data"; }

run() {  # run GPU NAME ARGS...: train.py on one GPU, resuming if a checkpoint exists
  local gpu=$1 name=$2; shift 2
  local resume=""; [ -f "$STASH/$name/ckpt.pt" ] && resume="--init_from=resume"
  CUDA_VISIBLE_DEVICES=$gpu python3 train.py "$@" $DATA --out_dir="$STASH/$name" $resume >> "$STASH/$name.txt" 2>&1
}

collect() {
  tar -czf "$OUT/results_$1.tar.gz" -C "$STASH" --exclude='*.pt' --exclude='data' . 2>/dev/null
  for f in "$STASH"/*.txt; do echo "== $f"; tail -n 4 "$f"; done
}

case "${1:-}" in
phase1)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'gpus', torch.cuda.device_count())"
  # DDP on GPUs: 2 ranks (NCCL) vs 1 rank, same global batch, same seed -> same losses within bf16 noise
  COMMON="config/offline_ref12.py $DATA --max_iters=60 --eval_interval=30 --log_interval=10 --compile=False"
  CUDA_VISIBLE_DEVICES=0 python3 train.py $COMMON --out_dir="$STASH/ddp_1gpu" > "$STASH/ddp_1gpu.txt" 2>&1
  torchrun --standalone --nproc_per_node=2 train.py $COMMON --micro_batch_size=16 --out_dir="$STASH/ddp_2gpu" \
    > "$STASH/ddp_2gpu.txt" 2>&1
  run 0 ref12 config/offline_ref12.py --checkpoint_interval=250 &
  for seed in 1 2 3; do run 1 random6_s$seed config/offline_random6.py --seed=$seed --checkpoint_interval=250 & done
  run 1 random6_2x config/offline_random6.py --seed=1 --max_iters=3000 --checkpoint_interval=250 &
  ;;
phase2)
  run 0 inherit6_grow_s1 config/offline_inherit6.py --ref="$STASH/ref12/ckpt.pt" --seed=1 --checkpoint_interval=250 &
  run 1 random6_2x config/offline_random6.py --seed=1 --max_iters=3000 --checkpoint_interval=250 &  # OOMed beside 3 others in phase1
  for seed in 2 3; do
    run 1 inherit6_s$seed config/offline_inherit6.py --ref="$STASH/ref12/ckpt.pt" --grow=False --seed=$seed \
      --checkpoint_interval=250 &
  done
  ;;
*) echo "usage: $0 phase1|phase2"; exit 2 ;;
esac
( sleep "$LIMIT"; pkill -TERM -f "train.py" ) >/dev/null 2>&1 &  # the call's clock: checkpoint and stop, rather than be killed
watchdog=$!
wait $(jobs -p | grep -v "^$watchdog$") 2>/dev/null
pkill -P $watchdog 2>/dev/null; kill $watchdog 2>/dev/null  # its sleep too: it holds the call's output open
collect "$1"
