# GPT-2 medium reference at the batch the paper's text states for its GPT-2 medium runs: ~50K tokens per step
# (48 sequences of 1024, 49,152 tokens, also what the published code's train.sh trains: 3 GPUs x 2 x 8);
# gpt2_medium.py's recipe otherwise (gpt2_medium.py: 384 sequences, 393K tokens). docs/RESULTS.md, "The
# paper's batch".
# torchrun --nproc_per_node=3 train.py config/gpt2_medium_50k.py
base = "gpt2_medium.py"
out_dir = "out/gpt2_medium_50k"
batch_size = 48
