"""model.py: parity with transformers (safetensors, sharded, .bin, GGUF), export round trip, errors, training."""
import json
import math
import pickle
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_hf_gpt2, tiny_hf_llama, write_gguf
from model import GPT, CrossEntropy, ModelConfig, UserError, empty_model, load_model, save_checkpoint, save_hf

TOL = 1e-4


def hf_logits(hf_model, tokens):
    with torch.no_grad():
        return hf_model(tokens).logits


def our_logits(model, tokens):
    with torch.no_grad():
        return model(tokens)


def max_diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


HF_MODELS = {
    "gpt2": lambda: tiny_hf_gpt2(),
    "llama_gqa": lambda: tiny_hf_llama(),
    "llama_tied": lambda: tiny_hf_llama(tie_word_embeddings=True, num_key_value_heads=4),
}


@pytest.mark.parametrize("kind", HF_MODELS)
def test_parity_with_transformers_safetensors(kind, tmp_path, tokens):
    hf = HF_MODELS[kind]()
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert not model.training
    assert max_diff(our_logits(model, tokens), hf_logits(hf, tokens)) <= TOL
    if kind == "llama_tied":
        assert model.lm_head.weight is model.wte.weight


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
    save_file({k: v.contiguous() for k, v in hf.transformer.state_dict().items()}, tmp_path / "model.safetensors")
    assert max_diff(our_logits(load_model(tmp_path), tokens), hf_logits(hf, tokens)) <= TOL


def random_model(arch, **kw):
    base = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=1000, block_size=64)
    if arch == "llama":
        base.update(n_kv_head=2, intermediate_size=96, rope_theta=5000.0)
    torch.manual_seed(0)
    model = GPT(ModelConfig(arch=arch, **{**base, **kw}))
    with torch.no_grad():  # move norms and biases off their trivial init so the export must carry them
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("arch,kw", [("gpt2", {}), ("gpt2", {"bias": False}), ("gpt2", {"tie_embeddings": False}),
                                     ("llama", {}), ("llama", {"tie_embeddings": True})])
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


def test_forward_returns_every_position_and_padding_never_wins():
    model = random_model("gpt2")  # vocab 1000, padded to 1024
    assert model.wte.weight.shape[0] == 1024
    with torch.no_grad():
        model.lm_head.weight[1000:] = 50.0  # padding rows that would dominate if they were ever scored
    x = torch.randint(0, 1000, (3, 10))
    assert model(x).shape == (3, 10, 1000)
    assert model.generate(x, 5, temperature=0).max() < 1000
    assert model.generate(x, 5, temperature=1.0, top_k=5).max() < 1000


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_loss_and_gradients_match_cross_entropy_over_the_real_vocabulary(dtype):
    """The training loss (CrossEntropy: softmax rebuilt from the 16-bit logits in backward) is F.cross_entropy on the
    unpadded logits: same loss, same gradient for every parameter; padding columns and ignored targets count for
    nothing, eager and compiled."""
    torch.manual_seed(0)
    model = random_model("gpt2")  # vocab 1000, padded to 1024
    with torch.no_grad():
        model.lm_head.weight[1000:] = 0.5  # padding rows that would change the loss if they were ever scored
    x, y = torch.randint(0, 1000, (2, 12)), torch.randint(0, 1000, (2, 12))
    y[0, :5] = -100

    def loss_and_grads(loss_fn):
        model.zero_grad()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_fn()
        loss.backward()
        return loss.float(), {n: p.grad.clone() for n, p in model.named_parameters()}

    reference = loss_and_grads(lambda: torch.nn.functional.cross_entropy(
        model(x).flatten(0, 1).float(), y.flatten(), ignore_index=-100))
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    for loss_fn in (lambda: model(x, y), torch.compile(lambda: model(x, y))):
        loss, grads = loss_and_grads(loss_fn)
        assert abs(loss - reference[0]) < tol
        for name, g in grads.items():
            assert (g - reference[1][name]).abs().max() < tol * max(1.0, reference[1][name].abs().max()), name
        assert grads["wte.weight"][1000:].abs().max() == 0  # the tied head: padding rows are never looked up either


def test_cross_entropy_of_16_bit_logits_is_float32_math():
    """Backward from the 16-bit logits and the float32 log-sum-exp gives F.cross_entropy's float32 gradient, rounded
    once to 16 bits; a row of ignored targets gets no gradient."""
    torch.manual_seed(0)
    logits = (torch.randn(32, 80) * 4).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, 70, (32,))
    targets[3] = -100
    loss = CrossEntropy.apply(logits, targets, 70)
    (grad,) = torch.autograd.grad(loss * 3.0, logits)
    ref_logits = logits.detach().float()[:, :70].requires_grad_()
    ref = torch.nn.functional.cross_entropy(ref_logits, targets, ignore_index=-100)
    (ref_grad,) = torch.autograd.grad(ref * 3.0, ref_logits)
    assert grad.dtype == torch.bfloat16 and abs(loss.item() - ref.item()) < 1e-5
    assert torch.equal(grad[:, :70], ref_grad.to(torch.bfloat16)) and grad[:, 70:].abs().max() == 0
    assert grad[3].abs().max() == 0


def test_generate_greedy_matches_transformers(tmp_path, tokens):
    hf = tiny_hf_llama()
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path).generate(tokens[:, :8], 10, temperature=0)
    theirs = hf.generate(tokens[:, :8], max_new_tokens=10, do_sample=False, min_new_tokens=10)
    assert torch.equal(ours, theirs)


def test_flops_per_token_matches_the_palm_formula():
    config = ModelConfig(arch="gpt2", n_layer=12, n_head=12, n_embd=768, vocab_size=50257, block_size=1024)
    model = empty_model(config, device="meta")
    d, L = 768, 12
    n_matmul = L * (12 * d * d + 13 * d) + 50304 * d + 2 * d  # blocks + tied wte/lm_head + ln_f; no wpe
    assert model.num_params(matmul_only=True) == n_matmul
    assert model.flops_per_token() == 6 * n_matmul + 12 * L * d * 1024


def test_residual_projections_use_scaled_init():
    model = GPT(ModelConfig(arch="gpt2", n_layer=8, n_head=4, n_embd=256, vocab_size=512, block_size=32))
    assert model.h[0].attn.c_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert model.h[0].attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.1)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_overfits_one_batch(arch):
    model = random_model(arch).train()
    x = torch.randint(0, 1000, (4, 32), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(200):
        loss = model(x[:, :-1], x[:, 1:])
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() <= 0.1 * first, (first, loss.item())


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
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral", "vocab_size": 10}))
    expect_error(tmp_path, "mistral", "not supported")


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


def test_error_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    expect_error(tmp_path / "other.pt", "not an inheritune checkpoint")
    (tmp_path / "x.gguf").write_bytes(b"not gguf at all")
    expect_error(tmp_path / "x.gguf", "not a readable GGUF")


def test_cli_error_is_one_line_and_nonzero(tmp_path):
    code = f"import model, util; util.cli(lambda: model.load_model({str(tmp_path / 'missing')!r}))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
