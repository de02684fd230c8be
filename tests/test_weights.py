"""weights.py: every format read (sharded safetensors, .bin, GPT2Model names, GGUF, project .pt) and written
(save_hf, save_checkpoint) against transformers, and one clear error for each kind of bad checkpoint."""

import importlib
import json
import pickle

import pytest
import torch

from conftest import (
    HF_MODELS,
    TOL,
    hf_logits,
    max_diff,
    our_logits,
    random_model,
    tiny_hf_gpt2,
    tiny_hf_llama,
    write_gguf,
)
from inheritune.util import UserError
from model import ModelConfig
from weights import load_model, save_checkpoint, save_hf


@pytest.mark.parametrize("kind", ["gpt2", "llama_gqa"])
def test_parity_through_sharded_safetensors(kind, tmp_path, tokens):
    hf = HF_MODELS[kind]()
    hf.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert max_diff(our_logits(load_model(tmp_path), tokens), hf_logits(hf, tokens)) <= TOL


@pytest.mark.parametrize("kind", ["gpt2", "llama_gqa"])
def test_parity_through_pytorch_model_bin(kind, tmp_path, tokens):
    hf = HF_MODELS[kind]()
    hf.config.to_json_file(tmp_path / "config.json")
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    assert max_diff(our_logits(load_model(tmp_path), tokens), hf_logits(hf, tokens)) <= TOL


def test_gpt2_without_transformer_prefix(tmp_path, tokens):
    """OpenAI's GPT-2 files store GPT2Model names (wte.weight, h.0...), without 'transformer.'."""
    from safetensors.torch import save_file

    hf = tiny_hf_gpt2()
    hf.config.to_json_file(tmp_path / "config.json")
    save_file(
        {k: v.contiguous() for k, v in hf.transformer.state_dict().items()}, tmp_path / "model.safetensors"
    )
    assert max_diff(our_logits(load_model(tmp_path), tokens), hf_logits(hf, tokens)) <= TOL


@pytest.mark.parametrize(
    "arch,kw",
    [
        ("gpt2", {}),
        ("gpt2", {"bias": False}),
        ("gpt2", {"tie_embeddings": False}),
        ("llama", {}),
        ("llama", {"tie_embeddings": True}),
    ],
)
def test_save_hf_round_trip(arch, kw, tmp_path, tokens):
    from transformers import AutoModelForCausalLM

    model = random_model(arch, **kw)
    save_hf(model, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == ("GPT2LMHeadModel" if arch == "gpt2" else "LlamaForCausalLM")
    assert max_diff(hf_logits(hf, tokens), our_logits(model, tokens)) <= TOL
    assert max_diff(our_logits(load_model(tmp_path), tokens), our_logits(model, tokens)) <= TOL


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_gguf_parity(tied, dtype, tmp_path, tokens):
    hf = tiny_hf_llama(tie_word_embeddings=tied)
    if dtype == "float16":  # the file holds fp16 matrices: compare against the same rounding
        with torch.no_grad():
            for p in hf.parameters():
                if p.dim() == 2:
                    p.copy_(p.half().float())
    write_gguf(hf, tmp_path / "tiny.gguf", dtype)
    model = load_model(tmp_path / "tiny.gguf")
    assert model.config.tie_embeddings == tied and model.config.n_kv_head == 2
    assert max_diff(our_logits(model, tokens), hf_logits(hf, tokens)) <= TOL


def test_project_checkpoint_round_trip_strips_wrappers(tmp_path, tokens):
    model = random_model("llama", tie_embeddings=True)
    save_checkpoint(tmp_path / "ckpt.pt", torch.compile(model), iter_num=7)
    raw = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert raw["iter_num"] == 7 and ModelConfig.from_dict(raw["config"]) == model.config
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in raw["model"])
    for path in (tmp_path / "ckpt.pt", tmp_path):  # the file, or the run folder holding it
        loaded = load_model(path)
        assert torch.equal(our_logits(loaded, tokens), our_logits(model, tokens))
        assert loaded.lm_head.weight is loaded.wte.weight
    assert list(tmp_path.iterdir()) == [tmp_path / "ckpt.pt"]  # no temp files left


# ------------------------------------------------------------------------------------------- errors


def expect_error(path, *words):
    with pytest.raises(UserError) as e:
        load_model(path)
    for word in words:
        assert word in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_error_missing_file(tmp_path):
    expect_error(tmp_path / "nope.pt", "no such file", ".gguf")


def test_error_unknown_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3", "vocab_size": 10}))
    expect_error(tmp_path, "gemma3", "not supported")


def test_error_missing_tensor_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    tiny_hf_llama().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, tmp_path / "model.safetensors")
    expect_error(tmp_path, "model.layers.1.mlp.up_proj.weight")


def test_error_wrong_shape_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    tiny_hf_gpt2().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["transformer.h.2.attn.c_proj.weight"] = torch.zeros(64, 32)
    save_file(state, tmp_path / "model.safetensors")
    expect_error(tmp_path, "transformer.h.2.attn.c_proj.weight", "(32, 64)", "h.2.attn.c_proj.weight")


class Payload:  # an object a weights_only load must refuse to build
    def __reduce__(self):
        return (print, ("this code must never run",))


def test_error_unsafe_pickle_is_refused(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"config": {}, "model": Payload()}, f)
    expect_error(tmp_path / "evil.pt", "cannot be loaded safely", "safetensors")
    assert "must never run" not in capsys.readouterr().out


def test_error_a_gguf_tensor_the_gguf_package_cannot_dequantise_is_named(tmp_path):
    import gguf

    hf = tiny_hf_llama(hidden_size=256)  # Q8_K packs rows in blocks of 256 values
    write_gguf(
        hf,
        tmp_path / "q8k.gguf",
        "float32",
        quantized={"blk.1.attn_q.weight": gguf.GGMLQuantizationType.Q8_K},
    )
    expect_error(
        tmp_path / "q8k.gguf", "tensor blk.1.attn_q.weight is Q8_K, which the gguf package cannot dequantise"
    )


def test_error_a_hf_config_without_a_key_its_family_needs(tmp_path):
    tiny_hf_gpt2().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["n_layer"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    expect_error(tmp_path, "config.json has no 'n_layer', which a gpt2 config needs")


def test_error_a_file_that_is_no_checkpoint_is_named_so(tmp_path):
    (tmp_path / "config.py").write_text("n_layer = 2\n")
    expect_error(tmp_path / "config.py", "config.py is not a checkpoint; pass a project checkpoint (.pt)")
    (tmp_path / "model.safetensors").write_bytes(b"")
    expect_error(
        tmp_path / "model.safetensors", "a .safetensors file alone has no config; pass the HF folder"
    )


def test_error_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    expect_error(tmp_path / "other.pt", "not an inheritune checkpoint")
    (tmp_path / "x.gguf").write_bytes(b"not gguf at all")
    expect_error(tmp_path / "x.gguf", "not a readable GGUF")


def test_error_damaged_file_is_not_called_unsafe(tmp_path):
    torch.save({"config": {}, "model": {"w": torch.zeros(1000)}}, tmp_path / "whole.pt")
    whole = (tmp_path / "whole.pt").read_bytes()
    for name, data in (
        ("random.pt", bytes(range(256)) * 40),
        ("cut.pt", whole[: len(whole) // 2]),
        ("text.pt", b"these are not the weights you are looking for\n"),
    ):
        (tmp_path / name).write_bytes(data)
        expect_error(tmp_path / name, "damaged or not a PyTorch checkpoint", "again")
    torch.save({"config": {}, "model": Payload()}, tmp_path / "unsafe.pt")  # a whole archive holding code
    expect_error(tmp_path / "unsafe.pt", "holds Python objects other than tensors", "safetensors")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize("script", ["inherit", "train", "eval"])
def test_error_damaged_safetensors_in_every_script(tmp_path, small_bins, script, damage):
    tiny_hf_gpt2().save_pretrained(tmp_path / "ref")
    weights_file = tmp_path / "ref" / "model.safetensors"
    data = weights_file.read_bytes()
    weights_file.write_bytes(data[: len(data) // 2] if damage == "truncated" else bytes(range(256)) * 64)
    ref, out = tmp_path / "ref", tmp_path / "out"
    args = {
        "inherit": ["--ref", ref, "--n_layer", "1", "--out", out / "x.pt"],
        "train": [
            "--init_from=inherit",
            f"--ref={ref}",
            "--n_layer=1",
            "--block_size=32",
            "--eval_tokens=2048",
            f"--data_dir={small_bins}",
            f"--out_dir={out}",
            "--device=cpu",
        ],
        "eval": ["--ckpt", ref, "--val_data", small_bins],
    }[script]
    with pytest.raises(UserError, match="model.safetensors is damaged or truncated .*; download it again"):
        importlib.import_module(script).main([str(a) for a in args])
    assert not out.exists()
