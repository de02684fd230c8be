# Inheritune on LLaMA-2 7B (32 layers): inherit the first 7 blocks (plus embeddings, final norm and head),
# with OpenLLaMA-3B's recipe (openllama3b_inherit13.py). Reference: the HF folder of meta-llama/Llama-2-7b-hf,
# downloaded beforehand (license required).
# python prepare_owt.py --source <corpus> --tokenizer checkpoints/Llama-2-7b-hf --out data/llama2_1b
# torchrun --nproc_per_node=1 train.py config/llama2_7b_inherit7.py
base = "openllama3b_inherit13.py"
out_dir = "out/llama2_7b_inherit7"
data_dir = "data/llama2_1b"
ref = "checkpoints/Llama-2-7b-hf"
n_layer = 7
micro_batch_size = 4
