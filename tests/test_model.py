"""model.py: the forward against transformers, the training loss, generation, FLOPs, init, and learning."""

import math

import pytest
import torch

from conftest import HF_MODELS, TOL, hf_logits, max_diff, our_logits, random_model, tiny_hf_llama
from model import GPT, CrossEntropy, ModelConfig, empty_model
from weights import load_model


@pytest.mark.parametrize("kind", HF_MODELS)
def test_parity_with_transformers_safetensors(kind, tmp_path, tokens):
    hf = HF_MODELS[kind]()
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert not model.training
    assert max_diff(our_logits(model, tokens), hf_logits(hf, tokens)) <= TOL
    if kind == "llama_tied":
        assert model.lm_head.weight is model.wte.weight


def test_forward_returns_every_position_and_generation_never_picks_padding():
    """Greedy generation appends the argmax of the model's own logits over the real vocabulary, step by step;
    top-k sampling draws only among the k most likely tokens. Padding rows that would win every time if they
    were ever scored are never picked."""
    model = random_model("gpt2")  # vocab 1000, padded to 1024
    assert model.wte.weight.shape[0] == 1024
    with torch.no_grad():
        model.lm_head.weight[1000:] = 50.0
    x = torch.randint(0, 1000, (3, 10), generator=torch.Generator().manual_seed(0))
    assert model(x).shape == (3, 10, 1000)
    expected = x
    with torch.no_grad():  # the same forward passes generate() makes, on the same prefixes
        for _ in range(5):
            expected = torch.cat([expected, model(expected)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(model.generate(x, 5, temperature=0), expected)
    torch.manual_seed(0)
    sampled = model.generate(x, 20, temperature=1.0, top_k=5)
    assert sampled.shape == (3, 30) and torch.equal(sampled[:, :10], x)
    with torch.no_grad():
        for t in range(10, 30):
            top5 = model(sampled[:, :t])[:, -1].topk(5).indices
            assert (top5 == sampled[:, t, None]).any(-1).all(), t


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_loss_and_gradients_match_cross_entropy_over_the_real_vocabulary(dtype):
    """The training loss (CrossEntropy: softmax rebuilt from the 16-bit logits in backward) is F.cross_entropy
    on the unpadded logits: same loss, same gradient for every parameter; padding columns and ignored targets
    count for nothing, eager and with the head and loss compiled (train.py's compile_scope=blocks; the whole
    model compiled is checked in tests/test_train.py)."""
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
        (loss * 0.25).backward()  # a scale, as accumulation gives: backward must use the incoming gradient
        return loss.float(), {n: p.grad.clone() for n, p in model.named_parameters()}

    reference = loss_and_grads(
        lambda: torch.nn.functional.cross_entropy(
            model(x).flatten(0, 1).float(), y.flatten(), ignore_index=-100
        )
    )
    # float32: eager and compiled kernels reduce in their own orders, a few ulps of a loss near 7 (ulp 4.8e-7)
    # apart on any CPU; counting a padding column or an ignored target would move it by > 1e-3
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    compiled_loss = torch.compile(model.loss, dynamic=False)  # the head and CrossEntropy, as train.py does
    for loss_fn in (lambda: model(x, y), lambda: compiled_loss(model.hidden_states(x), y)):
        loss, grads = loss_and_grads(loss_fn)
        assert abs(loss - reference[0]) < tol
        for name, g in grads.items():
            assert (g - reference[1][name]).abs().max() < tol * max(1.0, reference[1][name].abs().max()), name
        # the tied head: padding rows are never looked up either
        assert grads["wte.weight"][1000:].abs().max() == 0


def test_cross_entropy_of_16_bit_logits_is_float32_math():
    """Backward from the 16-bit logits and the float32 log-sum-exp gives F.cross_entropy's float32 gradient,
    rounded once to 16 bits; a row of ignored targets gets no gradient."""
    torch.manual_seed(0)
    logits = (torch.randn(32, 80) * 4).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, 70, (32,))
    targets[3] = -100
    loss = CrossEntropy.apply(logits, targets, 70)
    (grad,) = torch.autograd.grad(loss * 3.0, logits)
    ref_logits = logits.detach().float()[:, :70].requires_grad_()
    ref = torch.nn.functional.cross_entropy(ref_logits, targets, ignore_index=-100)
    (ref_grad,) = torch.autograd.grad(ref * 3.0, ref_logits)
    assert abs(loss.item() - ref.item()) < 1e-5
    # the same float32 value rounded once to bfloat16, up to one bfloat16 step (2^-7 relative) where the two
    # float32 computations round their last bit apart across a bfloat16 rounding boundary
    torch.testing.assert_close(grad[:, :70].float(), ref_grad, rtol=2**-7, atol=0)
    assert grad[:, 70:].abs().max() == 0
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


@pytest.mark.parametrize("arch,ffn_bytes", [("gpt2", 4), ("llama", 6)])
def test_training_memory_counts_states_activations_and_logits(arch, ffn_bytes):
    """The estimate's terms (docs/PERFORMANCE.md compares their sum with measured peaks): float32 weights,
    gradients and two AdamW moments, sharded by `shards`; per block and token 18 n_embd + 4 or 6 ffn bytes;
    16-bit logits."""
    model = GPT(ModelConfig(arch=arch, n_layer=2, n_head=4, n_embd=64, vocab_size=1000, block_size=32))
    n, c, tokens = model.num_params(), model.config, 4 * 32
    one = model.training_memory(micro_batch=4)
    assert (one["weights"], one["gradients"], one["optimizer"]) == (4 * n, 4 * n, 8 * n)
    per_token = 18 * c.n_embd + ffn_bytes * c.intermediate_size
    assert one["activations"] == 2 * per_token * tokens + 2 * c.padded_vocab_size * tokens
    two = model.training_memory(micro_batch=4, shards=2)
    assert two["optimizer"] == 4 * n and two["activations"] == one["activations"]
