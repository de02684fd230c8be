"""Tokenizers for every script: GPT-2 BPE offline (tiktoken), a HF tokenizer.json, or a GGUF's own vocabulary.

    tok = load_tokenizer("gpt2")      # or "path/to/tokenizer.json", a model folder holding one, "model.gguf"
    ids = tok.encode("Hello world")   # plain text: no BOS/EOS added, "<|endoftext|>" in the text stays text
    tok.decode(ids); tok.vocab_size; tok.eot_id; tok.hash

Document separator `eot_id`: GPT-2's <|endoftext|> (50256) after each document. For a tokenizer.json or GGUF
it is the EOS after each document (a chat model's end-of-turn EOS, <|im_end|> or <|eot_id|>, gives way to the
vocabulary's end-of-text token), unless the tokenizer prepends BOS to its inputs (`prepend_bos`: LLaMA 1-2,
Llama 3.x, Mistral), in which case it is that BOS, written before each document: what the model saw in
pretraining.

`hash` is a sha256 over the vocabulary as raw bytes in id order, so one vocabulary has one hash whether it
comes from tiktoken, a tokenizer.json or a GGUF: bins are checked against a model by it.
"""

import base64
import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from inheritune.util import UserError, resolve_hub_name

# GPT-2's BPE ranks (tiktoken's r50k_base file; whisper ships the same bytes as assets/gpt2.tiktoken).
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# tiktoken's cache key
GPT2_RANKS_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
# GPT-2's split regex ('s|'t|...| ?\p{L}+| ?\p{N}+|...), with possessive quantifiers as tiktoken runs it
# fastest.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT2_EOT = "<|endoftext|>"
ASSETS_HINT = "pip install --no-deps openai-whisper==20250625"
# llama.cpp's split regexes for Llama 3 ("llama-bpe") and Qwen2/2.5/3 ("qwen2") vocabularies
# (llama-vocab.cpp), run before the byte mapping: contractions of any case, one non-letter may lead a word,
# and numbers split into runs of up to three digits (Llama 3) or single digits (Qwen).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
GGUF_SPLITS = {"llama-bpe": LLAMA3_SPLIT, "qwen2": LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")}
# Tokens that end a document in common vocabularies, for a tokenizer.json without tokenizer_config.json.
KNOWN_EOS = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")
# What a chat model's config calls EOS ends a turn, not a document: pretraining separated documents with the
# vocabulary's own end-of-text token (Qwen, SmolLM2: <|endoftext|>; Llama 3: <|end_of_text|>).
CHAT_TURN_ENDS = ("<|im_end|>", "<|eot_id|>")


def byte_alphabet():
    """GPT-2's map from each byte to the printable character byte-level BPE vocabularies spell it with."""
    printable = {
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    }
    spare = iter(range(256, 512))
    return {b: chr(b) if b in printable else chr(next(spare)) for b in range(256)}


def vocab_hash(tokens):
    """sha256 of a vocabulary given as the bytes of each token in id order."""
    h = hashlib.sha256()
    for token in tokens:
        h.update(len(token).to_bytes(4, "little") + token)
    return h.hexdigest()


class Tokenizer:
    """What scripts rely on: name, hash, vocab_size, bos_id, eos_id (ends generation), prepend_bos, eot_id
    (separates documents), encode*, decode."""

    def __repr__(self):
        name = type(self).__name__
        return f"{name}({self.name}, vocab {self.vocab_size}, eot {self.eot_id}, hash {self.hash[:12]})"


class GPT2Tokenizer(Tokenizer):
    """GPT-2 BPE through tiktoken, built from a local ranks file: never touches the network."""

    def __init__(self, ranks_file_bytes):
        import tiktoken

        lines = (line.split() for line in ranks_file_bytes.splitlines() if line)
        ranks = {base64.b64decode(token): int(rank) for token, rank in lines}
        self.enc = tiktoken.Encoding(
            "gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={GPT2_EOT: len(ranks)}
        )
        self.name, self.vocab_size = "gpt2", len(ranks) + 1
        self.bos_id, self.eos_id, self.eot_id, self.prepend_bos = None, len(ranks), len(ranks), False
        self.hash = vocab_hash(sorted(ranks, key=ranks.get) + [GPT2_EOT.encode()])

    def encode(self, text):
        return self.enc.encode_ordinary(text)

    def encode_numpy(self, text):
        """encode() as a uint32 array, skipping the Python list (the fast path of prepare_owt.py)."""
        # no special token is allowed: plain text
        return self.enc.encode_to_numpy(text, disallowed_special=())

    def decode(self, ids):
        return self.enc.decode([int(i) for i in ids])


class HFTokenizer(Tokenizer):
    """A `tokenizers.Tokenizer` (from a tokenizer.json, or built from a GGUF)."""

    def __init__(self, tok, name, bos_id, eos_id, prepend_bos, vocab_size=None):
        self.tok, self.name = tok, name
        self.bos_id, self.eos_id, self.prepend_bos = bos_id, eos_id, prepend_bos
        self.eot_id = bos_id if prepend_bos else document_end(eos_id, tok)
        vocab = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
        self.vocab_size = vocab_size or max(vocab) + 1
        byte_level = "ByteLevel" in json.dumps(json.loads(tok.to_str()).get("decoder"))
        self.hash = vocab_hash([token_bytes(vocab.get(i, ""), byte_level) for i in range(self.vocab_size)])
        self.__setstate__(self.__dict__)

    def __setstate__(self, state):
        self.__dict__.update(state)
        # Documents are plain text: a web page quoting "<|im_end|>" must not turn into the control token.
        self.tok.encode_special_tokens = True

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_numpy(self, text):
        return np.array(self.encode(text), dtype=np.uint32)

    def decode(self, ids):
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)


BYTE_OF_CHAR = {c: b for b, c in byte_alphabet().items()}


def document_end(eos, tok):
    """The id that ends a document: eos, unless eos ends a chat turn and the vocabulary has an end-of-text
    token."""
    if eos is not None and tok.id_to_token(eos) in CHAT_TURN_ENDS:
        return next((tok.token_to_id(t) for t in KNOWN_EOS if tok.token_to_id(t) is not None), eos)
    return eos


def token_bytes(token, byte_level):
    """The raw bytes a vocabulary entry stands for (byte-level spelling undone where it applies)."""
    if byte_level and all(c in BYTE_OF_CHAR for c in token):
        return bytes(BYTE_OF_CHAR[c] for c in token)
    return token.encode("utf-8")


def find_gpt2_ranks():
    """The GPT-2 ranks file's bytes, from tiktoken's cache or the whisper package, checked by sha256."""
    cache = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR"))
    cache = os.path.join(tempfile.gettempdir(), "data-gym-cache") if cache is None else cache
    candidates = [Path(cache) / hashlib.sha1(GPT2_RANKS_URL.encode()).hexdigest()] if cache else []
    # locate without importing: whisper's own deps are not installed
    whisper = importlib.util.find_spec("whisper")
    if whisper is not None:
        candidates += [Path(p) / "assets" / "gpt2.tiktoken" for p in whisper.submodule_search_locations or []]
    for path in candidates:
        if path.is_file():
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() == GPT2_RANKS_SHA256:
                return data
    raise UserError(
        f"GPT-2 BPE ranks not found offline: `{ASSETS_HINT}` (ships whisper/assets/gpt2.tiktoken) "
        "or put tiktoken's r50k_base file in $TIKTOKEN_CACHE_DIR"
    )


def load_tokenizer_json(path):
    """A HF tokenizer.json; BOS/EOS from the tokenizer_config.json beside it when there is one."""
    from tokenizers import Tokenizer as HFBackend

    try:
        tok = HFBackend.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for any malformed file
        raise UserError(f"{path} is not a HF tokenizer.json ({e})") from None
    config_path = path.parent / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}

    def config_id(key):
        token = config.get(key)
        token = token.get("content") if isinstance(token, dict) else token
        return tok.token_to_id(token) if isinstance(token, str) else None

    bos, eos = config_id("bos_token"), config_id("eos_token")
    # Does the tokenizer put a token in front of every input (LLaMA's <s>)? Ask its post-processor.
    plain, framed = (
        tok.encode("a", add_special_tokens=False).ids,
        tok.encode("a", add_special_tokens=True).ids,
    )
    prepend_bos = len(framed) > len(plain) and framed[1 : len(plain) + 1] == plain
    if prepend_bos:
        bos = framed[0]
    if eos is None:
        eos = next((tok.token_to_id(t) for t in KNOWN_EOS if tok.token_to_id(t) is not None), None)
    if eos is None and not prepend_bos:
        raise UserError(
            f"{path}: cannot tell which token ends a document; put the model's tokenizer_config.json "
            "(with eos_token) next to it"
        )
    return HFTokenizer(tok, f"hf:{path.parent.name}", bos, eos, prepend_bos)


def gguf_pre_tokenizer(pre):
    """llama.cpp's pre-tokenizer for `tokenizer.ggml.pre` (llama-vocab.cpp), as a tokenizers pre-tokenizer."""
    from tokenizers import Regex, pre_tokenizers

    if pre in GGUF_SPLITS:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(GGUF_SPLITS[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    gpt2_split = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)  # GPT-2's regex, then bytes
    if pre == "gpt2":  # LLAMA_VOCAB_PRE_TYPE_GPT2: the GPT-2 regex alone
        return gpt2_split
    # LLAMA_VOCAB_PRE_TYPE_SMOLLM: "\p{N}" (every digit alone) first, then the GPT-2 regex
    if pre == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), gpt2_split])
    raise UserError(
        f"GGUF pre-tokenizer {pre!r} is not supported (known: gpt2, smollm, {', '.join(GGUF_SPLITS)}); "
        "pass the model's tokenizer.json as --tokenizer instead"
    )


def load_gguf(path):
    """The byte-level BPE vocabulary a GGUF carries in its metadata, as llama.cpp would tokenize with it."""
    import gguf
    from tokenizers import AddedToken, decoders, models
    from tokenizers import Tokenizer as HFBackend

    fields = gguf.GGUFReader(str(path)).fields

    def get(key, default=None):
        return fields[key].contents() if key in fields else default

    kind, pre = get("tokenizer.ggml.model"), get("tokenizer.ggml.pre", "default")
    if kind != "gpt2":
        raise UserError(
            f"{path.name}: tokenizer.ggml.model={kind!r}; only byte-level BPE ('gpt2') GGUF vocabularies "
            "are supported: pass the model's tokenizer.json as --tokenizer instead"
        )
    tokens, types = get("tokenizer.ggml.tokens"), get("tokenizer.ggml.token_type", [])
    merges = [tuple(m.split(" ", 1)) for m in get("tokenizer.ggml.merges", [])]
    tok = HFBackend(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    tok.pre_tokenizer = gguf_pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    # Control tokens (type 3) decode whole; user-defined ones (type 4) always match whole, as in llama.cpp.
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3]
    )
    tok.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == 4]
    )
    bos, eos = get("tokenizer.ggml.bos_token_id"), get("tokenizer.ggml.eos_token_id")
    prepend_bos = bool(get("tokenizer.ggml.add_bos_token", False))
    if (bos if prepend_bos else eos) is None:
        raise UserError(f"{path.name} names no {'BOS' if prepend_bos else 'EOS'} token to separate documents")
    return HFTokenizer(tok, f"gguf:{path.name}", bos, eos, prepend_bos, vocab_size=len(tokens))


def load_tokenizer(spec="gpt2"):
    """'gpt2', a tokenizer.json, a model folder (tokenizer.json, else its single .gguf) or its hub name, a
    .gguf."""
    if spec == "gpt2":
        return GPT2Tokenizer(find_gpt2_ranks())
    path = Path(resolve_hub_name(spec))
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "tokenizer.json").is_file() and len(ggufs) != 1:
            raise UserError(
                f"tokenizer folder {spec} holds no tokenizer.json (nor a single .gguf); point at the model "
                "folder that has one, or pass gpt2, a tokenizer.json or a .gguf"
            )
        path = path / "tokenizer.json" if (path / "tokenizer.json").is_file() else ggufs[0]
    if path.is_file() and path.suffix == ".gguf":
        return load_gguf(path)
    if path.is_file() and path.suffix == ".json":
        return load_tokenizer_json(path)
    if not path.exists() and ("/" in str(spec) or path.suffix in (".json", ".gguf")):
        raise UserError(
            f"tokenizer {spec}: no such file or folder; pass gpt2, a tokenizer.json, a folder or a .gguf"
        )
    raise UserError(
        f"unknown tokenizer {spec!r}: use 'gpt2', a tokenizer.json, a model folder holding one, or a .gguf "
        "file"
    )
