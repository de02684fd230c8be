"""Today's LLaMA-shaped families end to end: Llama 3.x (RoPE rescaling), Mistral (sliding window), Qwen2
(q/k/v biases), Qwen3 (q/k norms, own head size). Each against a tiny random transformers model of the family:
read from a HF folder and from GGUF, inherited, trained, written back as the family's own class; unsupported
variants refused by name."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import (
    HF_MODELS,
    ROOT,
    TINY,
    TOL,
    hf_logits,
    max_diff,
    our_logits,
    run_log,
    tiny_hf,
    train_here,
    truncated_reference_logits,
    write_gguf,
)
from formats import HF_CLASSES
from inheritune.util import UserError
from model import GPT, ModelConfig
from weights import load_model, save_hf

# Llama 3.x's RoPE rescaling as every Llama 3.x sets it (llama.cpp stores it as rope_freqs)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}  # fmt: skip
FAMILIES = ["llama3", "llama_linear", "mistral", "qwen2", "qwen2_untied", "qwen3"]
ARCH = {
    "llama3": "llama",
    "llama_linear": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "qwen2_untied": "qwen2",
    "qwen3": "qwen3",
}


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    models = {kind: HF_MODELS[kind]() for kind in FAMILIES}
    for kind, hf in models.items():
        hf.save_pretrained(root / kind)
    return root, models


@pytest.mark.parametrize("kind", FAMILIES)
def test_hf_folder_parity(kind, refs, tokens):
    root, models = refs
    model = load_model(root / kind)
    assert model.config.arch == ARCH[kind]
    assert max_diff(our_logits(model, tokens), hf_logits(models[kind], tokens)) <= TOL


@pytest.mark.parametrize(
    "kind,feature",
    [("llama3", "rope_scaling"), ("llama_linear", "rope_scaling"), ("mistral", "sliding_window")],
)
def test_the_tiny_models_exercise_each_feature(kind, feature, refs, tokens):
    """Without the feature the logits move far beyond TOL: the parity above would catch a wrong
    implementation."""
    root, models = refs
    model = load_model(root / kind)
    plain = GPT(dataclasses.replace(model.config, **{feature: None}))
    plain.load_state_dict(model.state_dict())
    assert max_diff(our_logits(plain.eval(), tokens), hf_logits(models[kind], tokens)) > 100 * TOL


def test_llama3_rope_scaling_is_read_from_either_transformers_spelling(refs, tmp_path):
    root, _ = refs
    hf = json.loads((root / "llama3" / "config.json").read_text())
    rope = hf.pop("rope_parameters")
    old_style = {
        **hf,
        "rope_theta": rope.pop("rope_theta"),
        "rope_scaling": {**rope, "type": rope.pop("rope_type")},
    }
    shutil.copytree(root / "llama3", tmp_path / "old")
    (tmp_path / "old" / "config.json").write_text(json.dumps(old_style))  # transformers 4.x's config.json
    assert load_model(tmp_path / "old").config == load_model(root / "llama3").config
    # both keys (a transformers 5 default next to a legacy rope_scaling): the scaling counts, as in
    # transformers
    mixed = {
        **old_style,
        "rope_parameters": {"rope_type": "default", "rope_theta": 5000.0},
        "rope_scaling": {"type": "linear", "factor": 4.0},
    }
    (tmp_path / "old" / "config.json").write_text(json.dumps(mixed))
    assert load_model(tmp_path / "old").config.rope_scaling == {"rope_type": "linear", "factor": 4.0}


@pytest.mark.parametrize("kind", ["llama3", "llama_linear", "qwen2", "qwen3"])
def test_gguf_parity(kind, tmp_path, tokens):
    if kind == "llama3":  # llama.cpp stores the rescaling as rope_freqs; every Llama 3.x uses these settings
        hf = tiny_hf("llama3", rope_parameters=LLAMA3_ROPE)
    else:
        hf = HF_MODELS[kind]()
    write_gguf(hf, tmp_path / "tiny.gguf", "float32")
    model = load_model(tmp_path / "tiny.gguf")
    want = {k: v for k, v in hf.config.rope_parameters.items() if k != "rope_theta"}
    assert model.config.rope_scaling == (None if want["rope_type"] == "default" else want)
    assert (model.config.qkv_bias, model.config.qk_norm, model.config.head_dim) == (
        kind == "qwen2",
        kind == "qwen3",
        32 if kind == "qwen3" else 16,
    )
    assert max_diff(our_logits(model, tokens), hf_logits(hf, tokens)) <= TOL


def test_gguf_rope_freqs_other_than_llama3_are_refused(tmp_path):
    hf = tiny_hf(
        "llama3",
        rope_parameters={**LLAMA3_ROPE, "low_freq_factor": 2.0},
    )
    write_gguf(hf, tmp_path / "odd.gguf", "float32")
    with pytest.raises(UserError, match="rope_freqs are not Llama 3's"):
        load_model(tmp_path / "odd.gguf")


@pytest.mark.parametrize("kind", FAMILIES)
def test_inherited_layers_match_an_independent_truncation(kind, refs, tokens):
    from inherit import inherit_layers

    root, models = refs
    model, provenance = inherit_layers(root / kind, layers="0,2")
    assert provenance["reinit"] == [] and model.config.arch == ARCH[kind]
    ours = our_logits(model.eval(), tokens)
    assert max_diff(ours, truncated_reference_logits(models[kind], [0, 2], tokens)) <= TOL


@pytest.mark.parametrize("kind", FAMILIES)
def test_save_hf_writes_the_family_own_class(kind, refs, tmp_path, tokens):
    from transformers import AutoModelForCausalLM

    from inherit import inherit_layers

    root, _ = refs
    model, _ = inherit_layers(root / kind, n_layer=2)
    save_hf(model, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == HF_CLASSES[ARCH[kind]] and hf.config.num_hidden_layers == 2
    assert max_diff(hf_logits(hf, tokens), our_logits(model.eval(), tokens)) <= TOL
    assert load_model(tmp_path).config == model.config


def test_save_hf_refuses_a_model_no_transformers_class_holds(tmp_path):
    model = GPT(
        ModelConfig(arch="llama", n_layer=1, n_head=4, n_embd=64, vocab_size=100, block_size=16, qk_norm=True)
    )
    with pytest.raises(UserError, match="no transformers class"):
        save_hf(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["llama3", "mistral", "qwen2", "qwen3"])
def test_training_from_each_family_lowers_the_loss(kind, small_bins, tmp_path):
    """inherit (2 of 3 layers) and scratch-with-ref (a fresh model of the reference's family at n_layer
    depth)."""
    ref = tmp_path / "ref"
    tiny_hf(
        kind, vocab_size=512, **({"tie_word_embeddings": True} if kind.startswith("qwen") else {})
    ).save_pretrained(ref)
    shutil.copy(small_bins.parent / "tokenizer.json", ref)  # the bins' tokenizer: the hashes match
    reference = load_model(ref).config
    for init in ("inherit", "scratch"):
        out = tmp_path / init
        args = f"--init_from={init}", f"--ref={ref}", "--n_layer=2", "--max_iters=20"
        train_here(*TINY, f"--data_dir={small_bins}", f"--out_dir={out}", *args)
        config, records = run_log(out)
        losses = [r["val_loss"] for r in records if "val_loss" in r]
        assert losses[-1] < losses[0] - 0.1, losses
        trained = load_model(out).config
        assert trained == dataclasses.replace(reference, n_layer=2, block_size=32), (trained, reference)
        assert config["arch"] == reference.arch


@pytest.mark.parametrize(
    "kind,change,words",
    [
        (
            "llama3",
            {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}},
            "type 'yarn'",
        ),
        ("qwen2", {"use_sliding_window": True}, "use_sliding_window"),
        ("qwen3", {"layer_types": ["full_attention", "sliding_attention", "full_attention"]}, "layer_types"),
        ("llama3", {"attention_bias": True}, "attention_bias"),
        ("llama3", {"mlp_bias": True}, "mlp_bias"),
        ("llama3", {"hidden_act": "gelu"}, "hidden_act"),
        ("qwen3", {"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
        ("llama3", {"model_type": "gemma3"}, "model_type 'gemma3' is not supported"),
    ],
)
def test_unsupported_variants_are_refused_by_name(kind, change, words, refs, tmp_path):
    root, _ = refs
    shutil.copytree(root / kind, tmp_path / "ref")
    hf = {**json.loads((tmp_path / "ref" / "config.json").read_text()), **change}
    (tmp_path / "ref" / "config.json").write_text(json.dumps(hf))
    with pytest.raises(UserError, match=words) as e:
        load_model(tmp_path / "ref")
    assert "\n" not in str(e.value)


def test_sliding_window_holds_in_packed_evaluation(refs):
    """eval.py packs a context's continuations into one row with explicit positions: the window must follow
    the positions, so each continuation scores as it would alone (Mistral's window is 24; the sequences are
    40-46)."""
    from inheritune.lm import batch_tensors, head_log_probs, pack_requests

    root, _ = refs
    model = load_model(root / "mistral")
    g = torch.Generator().manual_seed(0)
    context = torch.randint(0, 1000, (40,), generator=g).tolist()
    continuations = [torch.randint(0, 1000, (n,), generator=g).tolist() for n in (3, 6, 5)]
    (row,) = pack_requests([(context, c) for c in continuations], block_size=64)
    with torch.no_grad():
        hidden = model.hidden_states(*batch_tensors([row], torch.device("cpu")))[0]
        for index, offsets, targets in row.members:
            packed = head_log_probs(model, hidden[offsets])[range(len(targets)), targets]
            alone = torch.tensor([context + continuations[index]])
            logp = (
                model(alone)[0, len(context) - 1 : -1].float().log_softmax(-1)[range(len(targets)), targets]
            )
            assert torch.allclose(packed, logp, atol=1e-5), (packed, logp)


def test_reference_by_hub_name_through_the_cache_offline(refs, small_bins, tmp_path):
    """ref="org/model" resolves through the HF cache (here one laid out by hand, as huggingface_hub lays it
    out); offline, a name not in the cache is one line naming the two ways out. No network is touched. In
    processes of their own: huggingface_hub reads its cache settings once, at import."""
    root, _ = refs
    cache = tmp_path / "hub"
    snapshot = cache / "models--tiny-org--tiny-qwen3" / "snapshots" / ("a" * 40)
    shutil.copytree(root / "qwen3", snapshot)
    shutil.copy(small_bins.parent / "tokenizer.json", snapshot)
    (cache / "models--tiny-org--tiny-qwen3" / "refs").mkdir()
    (cache / "models--tiny-org--tiny-qwen3" / "refs" / "main").write_text("a" * 40)

    def offline(*command):
        env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
        return subprocess.run(
            [sys.executable, *map(str, command)], cwd=ROOT, env=env, capture_output=True, text=True
        )

    code = "import weights\nfrom inheritune import util\n"
    code += "util.cli(lambda: print(weights.load_model({!r}).config.arch))"
    r = offline("-c", code.format("tiny-org/tiny-qwen3"))
    assert r.returncode == 0 and r.stdout.strip() == "qwen3", r.stderr
    r = offline("-c", code.format("tiny-org/not-cached"))
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "not in the Hugging Face cache" in r.stderr and "pass a local HF model folder" in r.stderr
    (tmp_path / "text.txt").write_text("Words of a small corpus, repeated for the bins. " * 400)
    bins = [
        "--source",
        tmp_path / "text.txt",
        "--tokenizer",
        "tiny-org/tiny-qwen3",
        "--out",
        tmp_path / "bins",
    ]
    r = offline("prepare_owt.py", *bins, "--quiet")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "bins" / "meta.json").read_text())
    assert meta["tokenizer"]["spec"] == "tiny-org/tiny-qwen3"  # the name, loadable on another machine's cache
