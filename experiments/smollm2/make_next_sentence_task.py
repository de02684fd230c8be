"""Build the local lm-eval task `inheritune_next_sentence`: 4-way "which sentence comes next" on English
prose.

What: each item is 2-3 consecutive sentences of a paragraph (the context), the sentence that really follows
them, and 3 distractor sentences of similar length from *other* pages; the model picks the continuation with
the highest log-likelihood (acc) or log-likelihood per byte (acc_norm). The gold position is balanced (every
block of 4 consecutive items has it once at each position), so chance is exactly 0.25, also under --limit N
for N a multiple of 4, and eval.py's chance column (the better of uniform and the majority position) shows
0.250. Distractor lengths come from a randomly placed length band around the true sentence, so length alone
(shortest, longest, ...) scores chance; word overlap with the context does not (about 0.65): the task rewards
topical coherence, as intended.

Why: the offline training corpus (experiments/offline_gpt2/offline_english.py: linux-doc-6.1, python3.11-doc,
dict-gcide, Shakespeare) has no held-out downstream task; this one is real English prose that corpus does not
contain, needs no network, and a 135M model scores well above chance on it, so inherited vs random-init models
can be compared.

Source: English HTML of Debian's own manuals (none in the training corpus): The Debian Administrator's
Handbook (debian-handbook), the Installation Guide (installation-guide-amd64), Securing Debian (harden-doc),
Debian Policy (debian-policy), the Developer's Reference (developers-reference), the New Maintainers' Guide
(maint-guide), the Debian FAQ (debian-faq) and the Debian Reference (debian-reference-en). Only paragraph
prose outside lists, tables and screen blocks is used; inline code is kept only when it is one plain word (a
command or package name); a sentence with other code, URLs, code characters, many digits, fewer than 6 words
or outside 40-170 characters is dropped, and a context + next-sentence window must be clean throughout. One
item per paragraph at most.

    apt-get install -y --no-install-recommends debian-handbook installation-guide-amd64 harden-doc \
        debian-policy developers-reference maint-guide debian-faq debian-reference-en
    # -> tests/tasks/next_sentence/next_sentence.jsonl
    python experiments/smollm2/make_next_sentence_task.py
    python eval.py --ckpt model.gguf --tasks inheritune_next_sentence --include_path tests/tasks/next_sentence

Deterministic: files are read in sorted order and every random choice comes from one random.Random(--seed);
the same package versions (Debian 12) give the same file byte for byte. """

import argparse
import json
import random
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

DOCS = Path("/usr/share/doc")
# (name, Debian package, glob of its English HTML pages)
SOURCES = (
    ("handbook", "debian-handbook", DOCS / "debian-handbook/html/en-US", "*.html"),
    ("install", "installation-guide-amd64", DOCS / "installation-guide-amd64/en", "*.html"),
    ("securing", "harden-doc", DOCS / "harden-doc/html/en-US", "*.html"),
    ("policy", "debian-policy", DOCS / "debian-policy/policy.html", "*.html"),
    ("devref", "developers-reference", Path("/usr/share/developers-reference"), "*.html"),
    ("maint", "maint-guide", DOCS / "maint-guide/html", "*.en.html"),
    ("faq", "debian-faq", DOCS / "debian/FAQ", "*.en.html"),
    ("reference", "debian-reference-en", Path("/usr/share/debian-reference"), "*.en.html"),
)
OUT = Path(__file__).resolve().parents[2] / "tests/tasks/next_sentence/next_sentence.jsonl"
CODE, OPEN, CLOSE = "\x00", "\x01", "\x02"  # markers: non-prose content; start / end of inline code markup
CODE_CLASSES = {
    "command",
    "filename",
    "literal",
    "replaceable",
    "varname",
    "option",
    "computeroutput",
    "userinput",
    "email",
    "uri",
    "parameter",
    "function",
    "constant",
    "envar",
    "systemitem",
    "package",
}
SKIP_TAGS = {"pre", "table", "li", "dt", "dd", "ul", "ol", "dl", "script", "style", "sup"}
VOID_TAGS = {"br", "img", "hr", "meta", "link", "input", "col", "wbr"}
ABBREVIATIONS = (
    "e.g.",
    "i.e.",
    "etc.",
    "cf.",
    "vs.",
    "Mr.",
    "Mrs.",
    "Dr.",
    "Fig.",
    "approx.",
    "resp.",
    "al.",
)
MIN_CHARS, MAX_CHARS, MIN_WORDS = 40, 170, 6


class Paragraphs(HTMLParser):
    """Text of each paragraph (<p>, or Publican's <div class="para">) that is not inside a list, table or
    screen block. Inline code markup is kept only when it is one plain word (a command or package name)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        # stack entries: (tag, is_para, is_skip, is_code)
        self.paragraphs, self.stack, self.text = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag in VOID_TAGS:
            return
        classes = set((dict(attrs).get("class") or "").split())
        starts_para = (tag == "p" and "title" not in classes) or (tag == "div" and "para" in classes)
        is_para = starts_para and self.text is None and not any(skip for _, _, skip, _ in self.stack)
        is_code = tag in ("code", "tt", "pre") or bool(classes & CODE_CLASSES)
        self.stack.append((tag, is_para, tag in SKIP_TAGS, is_code))
        if is_para:
            self.text = []
        elif is_code and self.text is not None:
            self.text.append(OPEN)

    def handle_endtag(self, tag):
        if tag not in {entry[0] for entry in self.stack}:
            return  # a stray end tag
        while self.stack:
            open_tag, is_para, _, is_code = self.stack.pop()
            if is_para:
                self.paragraphs.append(finish(self.text))
                self.text = None
            elif is_code and self.text is not None:
                self.text.append(CLOSE)
            if open_tag == tag:
                break

    def handle_data(self, data):
        if self.text is not None:
            para = [entry[1] for entry in self.stack].index(True)
            inside = self.stack[para + 1 :]  # elements opened within the paragraph
            self.text.append(CODE if any(skip for _, _, skip, _ in inside) else data)


def finish(pieces):
    """One paragraph's text: whitespace collapsed, inline code that is one plain word unwrapped."""
    text = " ".join("".join(pieces).split())
    text = re.sub(f"{OPEN}\\s*([A-Za-z][A-Za-z0-9.+-]{{0,24}})\\s*{CLOSE}", r"\1", text)
    return text


def split_sentences(paragraph):
    pieces = re.split(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[A-Z\"“(])", paragraph)
    sentences = []
    for piece in pieces:
        if sentences and sentences[-1].endswith(ABBREVIATIONS):
            sentences[-1] += " " + piece
        else:
            sentences.append(piece)
    return [s.strip() for s in sentences]


def clean(sentence):
    """A plain prose sentence: no code markup or code characters, sane length, mostly letters."""
    if any(mark in sentence for mark in (CODE, OPEN, CLOSE)) or not MIN_CHARS <= len(sentence) <= MAX_CHARS:
        return False
    if len(sentence.split()) < MIN_WORDS:
        return False
    if not sentence[0].isupper() or not re.search(r"[.!?][\"')]?$", sentence):
        return False
    if re.search(r"[/\\=<>{}\[\]$_|#~@*`^]|http|www\.|\.\.\.|\s-\w", sentence):
        return False
    letters = sum(c.isalpha() for c in sentence)
    digits = sum(c.isdigit() for c in sentence)
    return letters / len(sentence) > 0.75 and digits <= 4


def load_pages(sources):
    """{"source/page": [paragraph as a list of sentences]} for every English page of the installed sources."""
    pages = {}
    for name, package, folder, pattern in sources:
        if not folder.is_dir():
            print(f"{name}: {folder} missing (apt-get install {package}), skipped")
            continue
        for path in sorted(folder.glob(pattern)):
            if path.name.startswith("index"):  # tables of contents
                continue
            parser = Paragraphs()
            parser.feed(path.read_text(errors="replace"))
            pages[f"{name}/{path.name.split('.html')[0]}"] = [
                split_sentences(p) for p in parser.paragraphs if p
            ]
    return pages


def overlap(context, sentence):
    """(words, words of 4+ letters) the sentence shares with the context: lowercase letter runs."""
    shared = set(re.findall(r"[a-z]+", " ".join(context).lower())) & set(
        re.findall(r"[a-z]+", sentence.lower())
    )
    return len(shared), sum(len(w) >= 4 for w in shared)


def build(pages, n_items, seed, hard=False):
    rng = random.Random(seed)
    pool = [(page, s) for page, paras in pages.items() for para in paras for s in para if clean(s)]
    pool = list(dict.fromkeys(pool))  # drop repeated sentences (boilerplate), keep order
    candidates = []
    for page, paras in pages.items():
        for para in paras:
            n_context = rng.choice((2, 3))
            starts = [
                i for i in range(len(para) - n_context) if all(clean(s) for s in para[i : i + n_context + 1])
            ]
            if starts:
                i = rng.choice(starts)
                candidates.append((page, para[i : i + n_context], para[i + n_context], set(para)))
    rng.shuffle(candidates)
    items, used = [], set()
    for page, context, true, paragraph in candidates:
        # Distractors from a length band [low, 1.5 * low] placed at a random offset (uniform in log length)
        # around the true sentence: given the band, the true length and the distractors' follow the same
        # distribution, so no length cue (shortest, longest, closest to the others) beats chance.
        low = len(true) / 1.5 ** rng.random()
        near = [
            s
            for p, s in pool
            if p != page and s not in used and s != true and s not in context and low <= len(s) <= 1.5 * low
        ]
        # the same manual, another paragraph, as many words (and words of 4+ letters) shared with the context
        if hard:
            shared, manual = overlap(context, true), page.split("/")[0]
            near = [
                s
                for p, s in pool
                if p.split("/")[0] == manual
                and s not in paragraph
                and s not in used
                and s != true
                and low <= len(s) <= 1.5 * low
                and overlap(context, s) == shared
            ]
        if len(near) < 3 or true in used:
            continue
        distractors = rng.sample(near, 3)
        used.update(distractors + [true])
        items.append((page, context, true, distractors))
        if len(items) == n_items:
            break
    items = items[: len(items) // 4 * 4]  # whole blocks of 4: the gold position stays balanced
    rows = []
    for block in range(0, len(items), 4):  # each block of 4 items: the gold once at each position
        positions = [0, 1, 2, 3]
        rng.shuffle(positions)
        for (page, context, true, distractors), gold in zip(items[block : block + 4], positions):
            choices = list(distractors)
            rng.shuffle(choices)
            choices.insert(gold, true)
            rows.append({"context": " ".join(context), "choices": choices, "answer": gold, "page": page})
    return rows, len(candidates), len(pool)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--n_items", type=int, default=500)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument(
        "--hard",
        action="store_true",
        help="distractors from the context's own page that share as many "
        "words with the context as the true sentence, +-1 (-> tests/tasks/next_sentence_hard/)",
    )
    args = p.parse_args()
    pages = load_pages(SOURCES)
    if args.hard and args.out == OUT:
        args.out = OUT.parents[1] / "next_sentence_hard/next_sentence_hard.jsonl"
    rows, n_candidates, n_pool = build(pages, args.n_items, args.seed, args.hard)
    if len(rows) < args.n_items:
        print(f"warning: only {len(rows)} of {args.n_items} items (not enough clean windows)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    per_source = Counter(r["page"].split("/")[0] for r in rows)
    print(
        f"{len(pages)} pages, {n_pool} clean sentences, {n_candidates} candidate windows -> {len(rows)} "
        "items "
        f"({dict(per_source)}) in {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)"
    )


if __name__ == "__main__":
    main()
