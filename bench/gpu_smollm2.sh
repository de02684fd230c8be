#!/usr/bin/env bash
# Issue 7, the real-model study: SmolLM2-135M (30 layers) -> inherit 15 (3 seeds) and 20 layers, against the
# same-depth random init (3 seeds), on ~24M tokens of offline English in SmolLM2's own tokens; then val loss and
# the local next-sentence task (lm-eval, chance 0.25) for the reference, the inherited models at step 0 and every
# trained run, spread over the machine's GPUs (2 or 4). The GGUF (98 MB) is over one call's carry limit, so it travels as
# .stash/smollm2_gguf.part{0,1,2} over consecutive calls on a warm machine:
#   bash bench/gpu_smollm2.sh stage   # copy whatever parts/bins/wheels this call carried into $STASH
#   bash bench/gpu_smollm2.sh run     # stage, assemble and check the GGUF, install lm-eval, train, evaluate
set -uo pipefail
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
STASH=${STASH:-/root/stash}
OUT=${OUT:-$STASH/out}
LIMIT=${LIMIT:-540}
S=$STASH/smol
mkdir -p "$STASH/parts" "$S" "$OUT"
for f in .stash/smollm2_gguf.part* .stash/smollm2_gguf.sha256 .stash/smollm_bins.tar.xz; do
  [ -f "$f" ] && cp "$f" "$STASH/parts/" && echo "staged $f"
done
[ -d .stash/wheels312 ] && cp -r .stash/wheels312 "$STASH/" && echo "staged wheels"
[ "${1:-}" = stage ] && exit 0
[ "${1:-}" = run ] || { echo "usage: $0 stage|run"; exit 2; }

GGUF=$STASH/SmolLM2-135M-Instruct.Q4_1.gguf
cat "$STASH"/parts/smollm2_gguf.part0 "$STASH"/parts/smollm2_gguf.part1 "$STASH"/parts/smollm2_gguf.part2 > "$GGUF"
(cd "$STASH" && sed "s#  .*#  $GGUF#" parts/smollm2_gguf.sha256 | sha256sum -c -) || exit 1
mkdir -p "$STASH/smol_data" && tar -xJf "$STASH/parts/smollm_bins.tar.xz" -C "$STASH/smol_data"
python3 -m pip install -q --no-index --no-deps "$STASH"/wheels312/*.whl 2>&1 | tail -2
python3 -c "import lm_eval, gguf; print('lm_eval', lm_eval.__version__)"

COMMON="--data_dir=$STASH/smol_data --ref=$GGUF"
TASK="--tasks inheritune_next_sentence --include_path tests/tasks/next_sentence --device cuda --tokenizer $GGUF"
VAL="--val_data $STASH/smol_data --block_size 1024 --eval_tokens 262144"
train_then_eval() {  # GPU NAME CONFIG ARGS...
  local gpu=$1 name=$2 config=$3; shift 3
  local resume=""; [ -f "$S/$name/ckpt.pt" ] && resume="--init_from=resume"  # a run cut short continues
  grep -q "step 1000: val loss" "$S/$name.txt" 2>/dev/null ||
    CUDA_VISIBLE_DEVICES=$gpu python3 train.py "$config" $COMMON --out_dir="$S/$name" "$@" $resume >> "$S/$name.txt" 2>&1 &&
  CUDA_VISIBLE_DEVICES=$gpu python3 eval.py --ckpt "$S/$name" $TASK $VAL --out "$S/eval_$name.json" >> "$S/$name.txt" 2>&1
}
reference_evals() {  # the reference as it is, and the inherited models before any training
  CUDA_VISIBLE_DEVICES=$((NGPU - 1)) python3 eval.py --ckpt "$GGUF" $TASK $VAL --out "$S/eval_reference30.json" > "$S/reference30.txt" 2>&1
  for n in 15 20; do
    python3 inherit.py --ref "$GGUF" --n_layer $n --out "$S/inherit${n}_step0.pt" > "$S/inherit${n}_step0.txt" 2>&1 &&
    CUDA_VISIBLE_DEVICES=$((NGPU - 1)) python3 eval.py --ckpt "$S/inherit${n}_step0.pt" $TASK $VAL \
      --out "$S/eval_inherit${n}_step0.json" >> "$S/inherit${n}_step0.txt" 2>&1
  done
}
I15=config/smollm2_inherit15.py R15=config/smollm2_random15.py
NGPU=$(nvidia-smi -L | wc -l)
RUNS=("inherit15_s1 $I15 --seed=1" "random15_s1 $R15 --seed=1" "inherit15_s2 $I15 --seed=2" "random15_s2 $R15 --seed=2"
      "inherit15_s3 $I15 --seed=3" "random15_s3 $R15 --seed=3" "inherit20_s1 $I15 --seed=1 --n_layer=20")
for i in "${!RUNS[@]}"; do  # round-robin over the GPUs; micro-batch 16 (x2 accumulation) so 4 runs share an H200
  { train_then_eval $((i % NGPU)) ${RUNS[$i]} --micro_batch_size=16; } &
done
reference_evals &
( sleep "$LIMIT"; pkill -TERM -f "train.py|eval.py" ) >/dev/null 2>&1 &
watchdog=$!
wait $(jobs -p | grep -v "^$watchdog$") 2>/dev/null
pkill -P $watchdog 2>/dev/null; kill $watchdog 2>/dev/null  # its sleep too: it holds the call's output open
tar -czf "$OUT/results_smollm2.tar.gz" -C "$S" --exclude='*.pt' . 2>/dev/null
for f in "$S"/*.txt; do echo "== $f"; grep -v "^{" "$f" | grep -iv "warn" | tail -n 3; done
