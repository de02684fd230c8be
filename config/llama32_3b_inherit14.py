# Inheritune v2 on Llama-3.2-3B (28 layers, tied embeddings, Llama 3 RoPE scaling): inherit the first 14
# blocks (plus embeddings, final norm and head), train with OpenLLaMA-3B's recipe (openllama3b_inherit13.py),
# grow by 2 until the reference's val loss is matched. The reference resolves through the Hugging Face cache
# (gated: accept the license and `huggingface-cli login` first), or set ref to a local HF folder.
# python prepare_owt.py --source <corpus> --tokenizer meta-llama/Llama-3.2-3B --out data/llama3_1b
# torchrun --nproc_per_node=1 train.py config/llama32_3b_inherit14.py
base = "openllama3b_inherit13.py"
out_dir = "out/llama32_3b_inherit14"
data_dir = "data/llama3_1b"
ref = "meta-llama/Llama-3.2-3B"
grow = True
n_layer = 14
micro_batch_size = 4
