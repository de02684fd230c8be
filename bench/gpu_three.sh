#!/usr/bin/env bash
# Issue 9: the card's launch, `torchrun --nproc_per_node=3 train.py config/gpt2_large_inherit18.py`, on a 4-GPU
# machine (nvidia-h200-x4), with overrides for length only. Two calls made back to back ($STASH survives between
# calls only while the machine stays warm):
#   bash bench/gpu_three.sh ref      # GPUs 0-2: the 36-layer GPT-2 large reference from scratch (config/gpt2_large.py)
#                                    # (a first attempt also ran it on 1 GPU, compiled, for the comparison)
#   bash bench/gpu_three.sh inherit  # GPUs 0-2: the card's command under torchrun --max_restarts=1; rank 1 is
#                                    # SIGKILLed once step 80 is logged (checkpoint at 50), torchrun restarts, the
#                                    # run resumes; GPU 3: the same command on 1 GPU, uninterrupted
#   bash bench/gpu_three.sh all      # both in one call (~7 min); WHILE_REF="cmd" runs cmd on GPU 3 meanwhile
# Shorter: STEPS=60 EVAL_EVERY=20 CKPT_EVERY=20 KILL_AFTER=30 ONE_GPU=0 (no 1-GPU run) bash bench/gpu_three.sh all
# No pretrained 36-layer GPT-2 exists offline, so the reference is our own config/gpt2_large.py trained for LENGTH
# steps on the offline English corpus (.stash/offline_english_bins.tar.xz, GPT-2 BPE).
set -uo pipefail
case "${1:-}" in ref|inherit|all) ;; *) echo "usage: $0 ref|inherit|all"; exit 2 ;; esac  # before the clock starts
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8
STASH=${STASH:-/root/stash}
OUT=${OUT:-$STASH/out}
LIMIT=${LIMIT:-550}
mkdir -p "$STASH" "$OUT"
[ -f "$STASH/data/meta.json" ] || { mkdir -p "$STASH/data" && tar -xJf .stash/offline_english_bins.tar.xz -C "$STASH/data"; }
# length only: 150 steps (19.4M tokens) instead of 100K, warmup scaled with it, a 256-window val budget
# and one growth round (grow_max_layer=18): the loop's verdict is still printed, but a 20-layer round would not fit
STEPS=${STEPS:-150} EVAL_EVERY=${EVAL_EVERY:-25} CKPT_EVERY=${CKPT_EVERY:-50} KILL_AFTER=${KILL_AFTER:-80}
LENGTH="--data_dir=$STASH/data --max_iters=$STEPS --warmup_iters=$((STEPS / 10)) --eval_interval=$EVAL_EVERY \
--eval_tokens=262144 --checkpoint_interval=$CKPT_EVERY"
# the call's clock: from LIMIT on, SIGTERM (checkpoint and stop) every train.py on the machine, again and again, so
# nothing started later outlives it either (these scripts assume the machine is theirs)
( sleep "$LIMIT"; while :; do pkill -TERM -f "train.py"; sleep 5; done ) >/dev/null 2>&1 &
watchdog=$!
wait_runs() { local r; r=$(jobs -p | grep -v "^$watchdog$"); [ -z "$r" ] || wait $r; }  # not the clock

ref() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'gpus', torch.cuda.device_count())"
  # eager (--compile=False): the reference is only a means here, and compiling 36 layers takes ~2.5 min
  CUDA_VISIBLE_DEVICES=0,1,2 torchrun --standalone --nproc_per_node=3 train.py config/gpt2_large.py $LENGTH \
    --compile=False --eval_interval=$STEPS --checkpoint_interval=$STEPS --out_dir="$STASH/gpt2_large" > "$STASH/ref_3gpu.txt" 2>&1
}
inherit() {
  REF="--ref=$STASH/gpt2_large/ckpt.pt --grow_max_layer=18"
  # restarts need a fresh rendezvous store per attempt (train.py refuses them otherwise; pytorch/pytorch#135712)
  CUDA_VISIBLE_DEVICES=0,1,2 TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --standalone --nproc_per_node=3 --max_restarts=1 \
    train.py config/gpt2_large_inherit18.py $LENGTH $REF --out_dir="$STASH/inherit18_3gpu" \
    > "$STASH/inherit_3gpu.txt" 2>&1 &
  launcher=$!
  [ "${ONE_GPU:-1}" = 1 ] && CUDA_VISIBLE_DEVICES=3 python3 train.py config/gpt2_large_inherit18.py $LENGTH $REF \
    --out_dir="$STASH/inherit18_1gpu" > "$STASH/inherit_1gpu.txt" 2>&1 &
  (  # the kill: once step KILL_AFTER is logged (after a checkpoint), SIGKILL the worker with LOCAL_RANK=1
    log="$STASH/inherit18_3gpu/round1_18L/log.jsonl"
    for _ in $(seq $((LIMIT * 2))); do grep -q "\"step\": $KILL_AFTER," "$log" 2>/dev/null && break
      kill -0 "$launcher" 2>/dev/null || exit 0; sleep 0.5; done  # ended (or failed) first: kill nothing
    grep -q "\"step\": $KILL_AFTER," "$log" 2>/dev/null || exit 0  # never got there: kill nothing
    for pid in $(pgrep -P "$launcher"); do
      if tr '\0' '\n' < "/proc/$pid/environ" | grep -qx 'LOCAL_RANK=1'; then
        echo "$(date +%T) SIGKILL rank 1 (pid $pid) after step $KILL_AFTER was logged" | tee "$STASH/kill.txt"
        kill -9 "$pid"
      fi
    done
  ) &
  wait_runs
}
case "${1:-}" in
ref) ref ;;
inherit) inherit ;;
all)  # inherit only from a reference that finished (not one the clock stopped), with time left for it
  ref & refpid=$!
  [ -n "${WHILE_REF:-}" ] && CUDA_VISIBLE_DEVICES=3 bash -c "$WHILE_REF" > "$STASH/while_ref.txt" 2>&1
  wait $refpid && [ "$SECONDS" -lt $((LIMIT - 180)) ] && inherit ;;
esac
pkill -P $watchdog 2>/dev/null; kill $watchdog 2>/dev/null  # its sleep too: it holds the call's output open
tar -czf "$OUT/results_$1.tar.gz" -C "$STASH" --exclude='*.pt' --exclude='*.bin' --exclude='data' --exclude='out' . 2>/dev/null
for f in "$STASH"/*.txt; do echo "== $f"; grep -v "^{" "$f" | grep -iv "warn" | tail -n 6; done
