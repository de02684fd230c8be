"""inherit.py: logits against an independent truncated reference, audit completeness, laziness, bad inputs."""

import json
import re

import pytest
import torch

import inherit
from conftest import tiny_hf_gpt2, tiny_hf_llama, truncated_reference_logits, write_gguf
from inherit import inherit_layers, parse_layers
from inheritune.util import UserError
from weights import load_model, open_weights, save_checkpoint

DEPTH = 6


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    """Tiny 6-layer references saved in HF layout (and the llama one also as GGUF)."""
    root = tmp_path_factory.mktemp("refs")
    models = {"gpt2": tiny_hf_gpt2(n_layer=DEPTH), "llama": tiny_hf_llama(num_hidden_layers=DEPTH)}
    for name, hf in models.items():
        hf.save_pretrained(root / name)
    write_gguf(models["llama"], root / "llama.gguf", "float32")
    return root, models


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_full_depth_is_bit_exact(arch, refs, tokens):
    root, _ = refs
    model, _ = inherit_layers(root / arch, n_layer=DEPTH)
    with torch.no_grad():
        assert torch.equal(model.eval()(tokens), load_model(root / arch)(tokens))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("layers", [[0, 1, 2], [0, 2, 4], [4, 0, 5], [0, 1, 5]])
def test_inherited_logits_match_truncated_reference(arch, layers, refs, tokens):
    root, models = refs
    spec = {"n_layer": 3} if layers == [0, 1, 2] else {"layers": layers}
    model, prov = inherit_layers(root / arch, **spec)
    assert prov["layers"] == layers and model.config.n_layer == 3
    with torch.no_grad():
        ours = model.eval()(tokens)
    assert (ours - truncated_reference_logits(models[arch], layers, tokens)).abs().max().item() <= 1e-4


def test_inherit_from_gguf(refs, tokens):
    root, models = refs
    model, prov = inherit_layers(root / "llama.gguf", layers="0,-1")
    with torch.no_grad():
        ours = model.eval()(tokens)
    assert (ours - truncated_reference_logits(models["llama"], [0, 5], tokens)).abs().max().item() <= 1e-4
    assert prov["sources"]["h.1.attn.c_attn.weight"] == [
        "blk.5.attn_q.weight",
        "blk.5.attn_k.weight",
        "blk.5.attn_v.weight",
    ]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_audit_names_a_source_for_every_parameter(arch, refs):
    root, _ = refs
    model, prov = inherit_layers(root / arch, n_layer=2)
    ref_names = set(open_weights(root / arch).file_names)
    assert set(prov["sources"]) == set(model.state_dict())
    for name, src in prov["sources"].items():
        if name == "lm_head.weight" and model.config.tie_embeddings:
            assert src == "tied to wte.weight"
        else:
            assert isinstance(src, list) and src and set(src) <= ref_names, (name, src)
    wanted = {
        "gpt2": ["transformer.wpe.weight", "transformer.ln_f.weight", "transformer.wte.weight"],
        "llama": ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"],
    }[arch]
    copied = {s for src in prov["sources"].values() if isinstance(src, list) for s in src}
    assert set(wanted) <= copied  # the tensors the paper's code leaves random
    assert prov["reinit"] == []
    assert (model.lm_head.weight is model.wte.weight) == (arch == "gpt2")


def test_reinit_is_explicit_and_audited(refs, tokens):
    root, _ = refs
    ref_head = open_weights(root / "llama").get("lm_head.weight")
    model, prov = inherit_layers(root / "llama", n_layer=2, reinit=("lm_head",), seed=3)
    assert prov["sources"]["lm_head.weight"] == "reinit" and prov["reinit"] == ["lm_head.weight"]
    assert not torch.equal(model.lm_head.weight, ref_head)
    assert model.lm_head.weight.std().item() == pytest.approx(0.02, rel=0.1)
    with pytest.raises(UserError, match="tied to wte"):
        inherit_layers(root / "gpt2", n_layer=2, reinit=("lm_head",))
    with pytest.raises(UserError, match="no such module"):
        inherit_layers(root / "gpt2", n_layer=2, reinit=("h.7",))


def test_missing_reference_tensor_is_an_error_naming_inherit_reinit(tmp_path, tokens):
    from safetensors.torch import load_file, save_file

    tiny_hf_llama(num_hidden_layers=3).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["lm_head.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(UserError, match="run inherit.py --reinit lm_head"):
        inherit_layers(tmp_path, n_layer=2)
    model, prov = inherit_layers(tmp_path, n_layer=2, reinit=("lm_head",))
    assert prov["sources"]["lm_head.weight"] == "reinit"


def test_only_needed_shards_are_opened(tmp_path, tokens):
    hf = tiny_hf_llama(num_hidden_layers=DEPTH)
    hf.save_pretrained(tmp_path, max_shard_size="60KB")
    weight_map = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    needed = {
        f
        for name, f in weight_map.items()
        if not name.startswith("model.layers.") or name.startswith("model.layers.0.")
    }
    unneeded = set(weight_map.values()) - needed
    assert unneeded, "the fixture should spread later layers over shards of their own"
    for f in unneeded:
        (tmp_path / f).unlink()
    model, _ = inherit_layers(tmp_path, n_layer=1)
    with torch.no_grad():
        ours = model.eval()(tokens)
    assert (ours - truncated_reference_logits(hf, [0], tokens)).abs().max().item() <= 1e-4


def test_dtype_follows_the_reference_unless_asked(tmp_path):
    hf = tiny_hf_llama(num_hidden_layers=3).to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    assert inherit_layers(tmp_path, n_layer=2)[0].wte.weight.dtype == torch.bfloat16
    assert inherit_layers(tmp_path, n_layer=2, dtype=torch.float32)[0].wte.weight.dtype == torch.float32


def test_parse_layers():
    assert parse_layers("0-11", 36) == list(range(12))
    assert parse_layers("0,2,4,6", 36) == [0, 2, 4, 6]
    assert parse_layers("0-5,30-35", 36) == [0, 1, 2, 3, 4, 5, 30, 31, 32, 33, 34, 35]
    assert parse_layers("-2,-1", 36) == [34, 35]
    assert parse_layers("-3--1", 36) == [33, 34, 35]
    assert parse_layers("5,1", 36) == [5, 1]


# ---------------------------------------------------------------------------------------------- CLI


def run_cli(*args):
    inherit.main([str(a) for a in args])


def test_cli_writes_checkpoint_with_provenance_and_prints_audit(refs, tmp_path, tokens, capsys):
    root, _ = refs
    run_cli("--ref", root / "gpt2", "--n_layer", 3, "--out", tmp_path / "small.pt")
    out = capsys.readouterr().out
    assert "wpe.weight" in out and "transformer.wpe.weight" in out and "h.2.*" in out
    ckpt = torch.load(tmp_path / "small.pt", weights_only=True)
    assert set(ckpt["inherit"]["sources"]) == set(ckpt["model"]) and ckpt["inherit"]["layers"] == [0, 1, 2]
    assert ckpt["inherit"]["reference"]["fingerprint"] and ckpt["inherit"]["reference"]["bytes"] > 0
    model, _ = inherit_layers(root / "gpt2", n_layer=3)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "small.pt")(tokens), model.eval()(tokens))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--n_layer", 0], "outside 1..6"),
        (["--n_layer", 7], "outside 1..6"),
        (["--layers", "0-6"], "out of range"),
        (["--layers", "-7"], "out of range"),
        (["--layers", "0,1,1"], "more than once"),
        (["--layers", "a-b"], "bad layer spec"),
    ],
)
def test_cli_bad_layer_choices(refs, tmp_path, args, message):
    root, _ = refs
    with pytest.raises(UserError, match=message):
        run_cli("--ref", root / "llama", *args, "--out", tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


def test_cli_unreadable_reference_and_unwritable_out(refs, tmp_path):
    root, _ = refs
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    for ref, out, message in [
        (tmp_path / "junk.pt", tmp_path / "x.pt", "damaged or not a PyTorch checkpoint"),
        (tmp_path / "missing", tmp_path / "x.pt", "no such file"),
        (root / "llama", tmp_path / "junk.pt" / "x.pt", "junk.pt is a file, not a folder"),
        (root / "llama", tmp_path, "is a folder: give a file path"),
    ]:
        with pytest.raises(UserError, match=message):
            run_cli("--ref", ref, "--n_layer", 2, "--out", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pt"]


def test_cli_never_replaces_the_reference_nor_an_existing_out_unasked(refs, tmp_path, small_bins):
    from conftest import TINY, train_here, tree_hash

    root, _ = refs
    train_here(*TINY, f"--data_dir={small_bins}", "--max_iters=10", f"--out_dir={tmp_path / 'run'}")
    before = tree_hash(tmp_path / "run")
    for ref, out in [
        (tmp_path / "run" / "ckpt.pt", tmp_path / "run" / "ckpt.pt"),
        (tmp_path / "run", tmp_path / "run" / "ckpt.pt"),
    ]:
        with pytest.raises(UserError, match="is a file of the reference, which inherit.py never writes"):
            run_cli("--ref", ref, "--n_layer", 1, "--out", out, "--overwrite")
    assert tree_hash(tmp_path / "run") == before  # the trained reference and its optimizer state intact
    run_cli("--ref", root / "llama", "--n_layer", 2, "--out", tmp_path / "small.pt")
    kept = tree_hash(tmp_path / "small.pt")
    with pytest.raises(UserError, match="small.pt exists; choose another path, or pass --overwrite"):
        run_cli("--ref", root / "llama", "--n_layer", 3, "--out", tmp_path / "small.pt")
    assert tree_hash(tmp_path / "small.pt") == kept
    run_cli("--ref", root / "llama", "--n_layer", 3, "--out", tmp_path / "small.pt", "--overwrite")
    assert load_model(tmp_path / "small.pt").config.n_layer == 3


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A 4-layer GPT-2 reference whose layer 2 writes nothing into the residual stream, and lazy_layers.py's
    scores of it."""
    from conftest import gpt2_with_a_silent_layer
    from layer_scores import diagnose

    root = tmp_path_factory.mktemp("scored")
    model = gpt2_with_a_silent_layer(n_layer=4, silent=2)
    save_checkpoint(root / "ref.pt", model)
    report = diagnose(
        model, torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(0)), 1e-2, 0.5
    )
    (root / "lazy_layers.json").write_text(json.dumps(report))
    return root, report


def test_select_keeps_the_layers_each_criterion_ranks_highest(scored, tmp_path):
    root, report = scored
    least_lazy = sorted(sorted(range(4), key=lambda i: report["layers"][i]["mass_mean"])[:3])
    expected = {
        "first": [0, 1, 2],
        "last": [1, 2, 3],
        "block_influence": [0, 1, 3],
        "angular": [0, 1, 3],
        "lazy": least_lazy,
    }
    for criterion, layers in expected.items():
        out = tmp_path / f"{criterion}.pt"
        scores = [] if criterion in ("first", "last") else ["--scores", root / "lazy_layers.json"]
        run_cli("--ref", root / "ref.pt", "--n_layer", 3, "--select", criterion, *scores, "--out", out)
        provenance = torch.load(out, weights_only=True)["inherit"]
        assert provenance["layers"] == layers, criterion
        if criterion != "first":
            assert provenance["selection"]["criterion"] == criterion


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--select", "angular"],
            "--select angular ranks the reference's layers by their scores: pass --scores",
        ),
        (["--select", "lazy", "--scores", "SCORES_OF_6"], "scores 6 layers, the reference has 4"),
        (["--select", "angular", "--scores", "REF"], "is not a lazy_layers.json with block influence"),
        (["--scores", "SCORES"], "--scores and --data are read by --select block_influence, angular or lazy"),
        (
            ["--select", "lazy", "--scores", "SCORES", "--data", "SCORES"],
            "pass --scores DIR/lazy_layers.json",
        ),
    ],
)
def test_select_refusals(scored, refs, tmp_path, args, message):
    root, report = scored
    (tmp_path / "six.json").write_text(
        json.dumps({**report, "layers": report["layers"][:3] * 2, "angular_distances": [[0] * 7] * 7})
    )
    paths = {
        "SCORES": root / "lazy_layers.json",
        "SCORES_OF_6": tmp_path / "six.json",
        "REF": root / "ref.pt",
    }
    args = [paths.get(a, a) for a in args]
    with pytest.raises(UserError, match=re.escape(message)):
        run_cli("--ref", root / "ref.pt", "--n_layer", 2, *args, "--out", tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_fresh_blocks_inherit_everything_but_the_blocks(refs, tmp_path):
    root, _ = refs
    run_cli("--ref", root / "gpt2", "--n_layer", 2, "--fresh_blocks", "--seed", 3, "--out", tmp_path / "x.pt")
    provenance = torch.load(tmp_path / "x.pt", weights_only=True)["inherit"]
    inherited = {name for name, source in provenance["sources"].items() if isinstance(source, list)}
    assert inherited == {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"}
    assert set(provenance["reinit"]) == {n for n in provenance["sources"] if n.startswith("h.")}


def test_select_measures_the_scores_on_data_as_lazy_layers_py_does(reference, small_bins, tmp_path):
    import lazy_layers

    window = ["--seqs", 2, "--seq_len", 32]
    lazy_layers.main([str(a) for a in ["--ref", reference, "--data", small_bins, "--out", tmp_path, *window]])
    for criterion in ("block_influence", "angular", "lazy"):
        chosen = []
        for source in (["--scores", tmp_path / "lazy_layers.json"], ["--data", small_bins, *window]):
            out = tmp_path / f"{criterion}_{source[0][2:]}.pt"
            run_cli("--ref", reference, "--n_layer", 2, "--select", criterion, *source, "--out", out)
            chosen.append(torch.load(out, weights_only=True)["inherit"])
        assert chosen[0]["layers"] == chosen[1]["layers"], criterion
        assert chosen[1]["selection"]["scores"] == f"measured on {small_bins} (2 x 32 tokens)"
