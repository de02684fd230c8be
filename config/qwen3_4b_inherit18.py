# Inheritune v2 on Qwen3-4B-Base (36 layers, q/k norms, head_dim 128 with 2560 wide): inherit the first 18
# blocks (plus embeddings, final norm and head), train with OpenLLaMA-3B's recipe (openllama3b_inherit13.py),
# grow by 2 until the reference's val loss is matched. The reference resolves through the Hugging Face cache,
# or set ref to a local HF folder.
# python prepare_owt.py --source <corpus> --tokenizer Qwen/Qwen3-4B-Base --out data/qwen3_1b
# torchrun --nproc_per_node=1 train.py config/qwen3_4b_inherit18.py
base = "openllama3b_inherit13.py"
out_dir = "out/qwen3_4b_inherit18"
data_dir = "data/qwen3_1b"
ref = "Qwen/Qwen3-4B-Base"
grow = True
n_layer = 18
micro_batch_size = 4
