"""lazy_layers.py: known answers on attention patterns built into a model's weights, the attention maps
against transformers' own (output_attentions, eager), and the command end to end."""

import json
import math
import re

import numpy as np
import pytest
import torch

import lazy_layers
from conftest import gpt2_with_a_silent_layer, random_model, tiny_hf, tiny_hf_gpt2, tiny_hf_llama, tree_hash
from inheritune.util import UserError
from layer_scores import attention_maps, attention_stats, diagnose, gromov_drop
from model import GPT, ModelConfig
from weights import load_model, save_checkpoint

T, WIDTH = 16, 32


def one_head_gpt2(pattern: str) -> GPT:
    """A 1-layer, 1-head GPT-2 whose attention is forced by its weights. Token embeddings are zero and
    position i embeds as the one-hot e_i, so after ln_1 position i is x_i = (e_i - 1/d) / sd: <x_i, x_j> = d
    (i = j) or -d/(d - 1) (i != j). identity: q = k = 10 x, so each query sees itself; uniform: q = k = 0,
    every score equal; first: every query is the same vector u and only position 0's key lies along u, so all
    attention goes to token 0."""
    model = GPT(ModelConfig(arch="gpt2", n_layer=1, n_head=1, n_embd=WIDTH, vocab_size=64, block_size=T))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.h[0].ln_1.weight.fill_(1.0)
        model.wpe.weight.copy_(torch.eye(T, WIDTH))
        w, b = model.h[0].attn.c_attn.weight, model.h[0].attn.c_attn.bias  # rows: [q; k; v]
        if pattern == "identity":
            w[:WIDTH] = w[WIDTH : 2 * WIDTH] = 10 * torch.eye(WIDTH)
        elif pattern == "first":
            x0 = model.h[0].ln_1(model.wpe.weight[:1])[0]
            b[0] = 30.0  # every query: 30 e_0
            # key of position j: 30 <x_0, x_j> / |x_0|^2 along e_0
            w[WIDTH] = 30.0 * x0 / x0.dot(x0)
    return model.eval()


def stats_of(model):
    (probs,) = attention_maps(model, torch.zeros(1, T, dtype=torch.long))
    return probs[0, 0], {k: v.item() for k, v in attention_stats(probs[0], rank_tol=1e-2).items()}


def test_attention_on_the_first_token_only_is_rank_one_with_all_mass_in_one_column():
    probs, stats = stats_of(one_head_gpt2("first"))
    assert probs[:, 0].min() > 1 - 1e-6
    assert stats["rank"] == 1 and stats["rank_90"] == 1 and stats["mass"] == pytest.approx(1.0, abs=1e-6)


def test_uniform_causal_attention():
    probs, stats = stats_of(one_head_gpt2("uniform"))
    uniform = np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]  # row i: 1/(i+1) over keys 0..i
    assert np.allclose(probs.numpy(), uniform, atol=1e-6)
    s = np.linalg.svd(uniform, compute_uv=False)
    assert stats["rank"] == (s > 1e-2 * s[0]).sum()
    harmonic = sum(1 / (i + 1) for i in range(T))  # key 0 receives 1/(i+1) from every query i
    assert stats["mass"] == pytest.approx(harmonic / T, abs=1e-6)


def test_attention_to_oneself_is_full_rank_with_mass_spread_over_the_columns():
    probs, stats = stats_of(one_head_gpt2("identity"))
    assert torch.allclose(probs, torch.eye(T), atol=1e-6)
    assert (
        stats["rank"] == T
        and stats["rank_90"] >= 0.85 * T
        and stats["mass"] == pytest.approx(1 / T, abs=1e-6)
    )


@pytest.mark.parametrize("family", ["llama_gqa", "qwen3", "mistral"])
def test_attention_maps_equal_transformers_attention_outputs(family, tmp_path, tokens):
    """Grouped-query attention (llama), q/k norms and head_dim (qwen3), a sliding window below the length
    (mistral)."""
    hf = tiny_hf_llama() if family == "llama_gqa" else tiny_hf(family)
    hf.config._attn_implementation = "eager"
    hf.save_pretrained(tmp_path)
    with torch.no_grad():
        theirs = hf(tokens, output_attentions=True).attentions
    ours = list(attention_maps(load_model(tmp_path), tokens))
    assert len(ours) == len(theirs) == hf.config.num_hidden_layers
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-5


def last_block(hf):
    return hf.transformer.h[-1] if hasattr(hf, "transformer") else hf.model.layers[-1]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_block_influence_and_angular_distance_equal_those_of_transformers_hidden_states(
    family, tmp_path, tokens
):
    """ShortGPT's block influence and the angular distances (per layer, and Gromov et al.'s between any two
    layers) against the same numbers computed independently from transformers' output_hidden_states. Its
    last hidden state is after the final norm, so the last block's own output is caught by a hook. Both
    forwards are float32 and agree to ~1e-6; arccos magnifies that near cos = 1, hence 1e-4 for angles."""
    hf = tiny_hf_gpt2() if family == "gpt2" else tiny_hf_llama()
    hf.save_pretrained(tmp_path)
    caught = []
    hook = last_block(hf).register_forward_hook(
        lambda m, i, out: caught.append(out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states
    hook.remove()
    streams = torch.stack([*hidden[:-1], caught[0]]).double()  # (L + 1, B, T, d)
    unit = streams / streams.norm(dim=-1, keepdim=True)
    cos = (unit[:, None] * unit[None]).sum(-1).clamp(-1, 1)  # (L + 1, L + 1, B, T)
    angles = (torch.arccos(cos) / math.pi).mean(-1).mean(-1)  # per sequence, then over the sequences
    influence = (1 - cos).mean(-1).mean(-1)
    report = diagnose(load_model(tmp_path), tokens, rank_tol=1e-2, lazy_mass=0.5)
    L = hf.config.num_hidden_layers
    for i, layer in enumerate(report["layers"]):
        assert layer["block_influence"] == pytest.approx(influence[i, i + 1].item(), abs=1e-5)
        assert layer["angular_distance"] == pytest.approx(angles[i, i + 1].item(), abs=1e-4)
    assert np.allclose(report["angular_distances"], angles.numpy(), atol=1e-4) and len(angles) == L + 1


def test_an_identity_layer_has_no_influence_and_is_the_block_gromov_drops():
    model = gpt2_with_a_silent_layer(n_layer=4, silent=2)
    report = diagnose(
        model, torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(0)), 1e-2, 0.5
    )
    influence = [e["block_influence"] for e in report["layers"]]
    assert influence[2] == pytest.approx(0, abs=1e-9) and min(influence[:2] + influence[3:]) > 1e-3
    assert report["layers"][2]["angular_distance"] == pytest.approx(0, abs=1e-6)
    assert gromov_drop(report["angular_distances"], 1)["layers"] == [2]
    assert gromov_drop(report["angular_distances"], 0) is None


def test_ranks_from_eigenvalues_equal_ranks_from_singular_values_down_to_the_smallest_tolerance():
    """attention_stats squares the singular values (eigenvalues of P P^T); on sharp maps, whose singular
    values spread over many decades, the counts must equal those of svdvals at every tolerance the command
    accepts."""
    g = torch.Generator().manual_seed(0)
    n = 96
    probs = (
        (3 * torch.randn(4, n, n, generator=g))
        .masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
        .softmax(-1)
    )
    s = torch.linalg.svdvals(probs.double())
    energy = (s**2).cumsum(-1) / (s**2).sum(-1, keepdim=True)
    for tol in (1e-2, 1e-4, 1e-6):
        stats = attention_stats(probs, tol)
        assert torch.equal(stats["rank"], (s > tol * s[..., :1]).sum(-1).double()), tol
        assert torch.equal(stats["rank_90"], (energy < 0.9).sum(-1).double() + 1)
    assert (s < 1e-6 * s[..., :1]).any()  # the smallest tolerance does cut into these spectra


def test_diagnose_finds_the_lazy_layer_and_suggests_the_depth_before_it():
    """Layer 0 attends to itself, layer 1 to the first token: 1 layer before the first lazy one."""
    first, model = one_head_gpt2("first"), one_head_gpt2("identity")
    model.config.n_layer = 2
    model.h.append(first.h[0])
    report = diagnose(model, torch.zeros(2, T, dtype=torch.long), rank_tol=1e-2, lazy_mass=0.5)
    assert [e["lazy"] for e in report["layers"]] == [False, True] and report["suggested_depth"] == 1
    assert report["layers"][1]["rank_max"] == 1 and report["layers"][0]["rank_max"] == T


def test_command_writes_json_and_plot_and_refuses_bad_inputs(small_bins, tmp_path, capsys):
    ref = tmp_path / "ref.pt"
    save_checkpoint(ref, random_model("llama", vocab_size=512, block_size=64))

    def run(*args):
        lazy_layers.main(["--ref", str(ref), *map(str, args)])

    run("--data", small_bins, "--out", tmp_path / "out", "--seqs", 3, "--seq_len", 32, "--device", "cpu")
    report = json.loads((tmp_path / "out" / "lazy_layers.json").read_text())
    assert len(report["layers"]) == 2 and len(report["layers"][0]["heads"]["rank"]) == 4
    assert report["settings"]["seq_len"] == 32 and report["reference"]["fingerprint"]
    assert report["reference"]["path"] == str(ref)  # as given: the report stays readable on another machine
    assert report["cost"]["seconds"] >= 0 and 0.01 < report["cost"]["peak_cpu_memory_gb"] < 100  # the RSS
    assert "suggested starting depth" in capsys.readouterr().out and math.isfinite(
        report["layers"][1]["mass_mean"]
    )
    assert (tmp_path / "out" / "lazy_layers.png").stat().st_size > 0
    for args, words in (
        (["--seq_len", 65], "longer than the reference's context of 64"),
        (["--seqs", 10_000], "fewer than --seqs x --seq_len"),
        (["--data", tmp_path / "nothing"], "no such file or folder"),
        (["--rank_tol", 1e-7], "--rank_tol in [1e-6, 1)"),
    ):
        with pytest.raises(UserError, match=re.escape(words)):
            run("--data", small_bins, "--out", tmp_path / "bad", "--seq_len", 32, *args)
        assert not (tmp_path / "bad").exists()
    before = tree_hash(tmp_path / "out")
    with pytest.raises(UserError, match="holds a report already; choose another folder, or pass --overwrite"):
        run("--data", small_bins, "--out", tmp_path / "out", "--seqs", 2, "--seq_len", 16, "--device", "cpu")
    assert tree_hash(tmp_path / "out") == before
    run(
        "--data",
        small_bins,
        "--out",
        tmp_path / "out",
        "--seqs",
        2,
        "--seq_len",
        16,
        "--device",
        "cpu",
        "--overwrite",
    )
    assert json.loads((tmp_path / "out" / "lazy_layers.json").read_text())["settings"]["seq_len"] == 16
