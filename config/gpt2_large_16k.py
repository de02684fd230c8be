# GPT-2 large reference at the batch the paper's text states for its GPT-2 large runs: 16K tokens per step (16
# sequences of 1024); gpt2_large.py's recipe otherwise. (gpt2_large.py's 126 sequences, 129K tokens, match the
# published code run as one process, where it multiplies accumulation by 8: 2 x 64 = 128 sequences; its
# train.sh, 3 GPUs x 2 x 8, trains 48 sequences, 49K tokens. docs/RESULTS.md, "The paper's batch".)
# torchrun --nproc_per_node=2 train.py config/gpt2_large_16k.py     # 16 sequences split over 1, 2 or 4 GPUs
base = "gpt2_large.py"
out_dir = "out/gpt2_large_16k"
batch_size = 16
micro_batch_size = 8
