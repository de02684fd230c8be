"""Shortcuts on a multiple-choice continuation task, no model at all: pick the option that shares the most (or
the fewest) words with the context, or the shortest or longest option. A model's accuracy means little unless
it clears these as well as chance.

    python experiments/smollm2/overlap_baseline.py [tests/tasks/next_sentence/next_sentence.jsonl]

Words are lowercase letter runs; "shared" counts distinct words in both the context and the option (all words,
and words of 4+ letters, a crude stop-word filter), and Jaccard divides by the union. A tie among the best
options scores 1/(number tied): the expected accuracy of breaking ties at random."""

import json
import re
import sys
from pathlib import Path

TASK = Path(__file__).resolve().parents[2] / "tests/tasks/next_sentence/next_sentence.jsonl"


def words(text, min_len=1):
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= min_len}


def accuracy(rows, score) -> float:
    total = 0.0
    for row in rows:
        scores = [score(words(row["context"]), words(choice), choice) for choice in row["choices"]]
        best = [i for i, s in enumerate(scores) if s == max(scores)]
        total += (row["answer"] in best) / len(best)
    return total / len(rows)


def main():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else TASK
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    long = lambda ws: {w for w in ws if len(w) >= 4}  # noqa: E731
    heuristics = {
        "most shared words": lambda c, o, text: len(c & o),
        "most shared words of 4+ letters": lambda c, o, text: len(long(c) & long(o)),
        "highest Jaccard": lambda c, o, text: len(c & o) / len(c | o),
        "fewest shared words": lambda c, o, text: -len(c & o),
        "shortest (characters)": lambda c, o, text: -len(text),
        "longest (characters)": lambda c, o, text: len(text),
    }
    print(f"{path.name}: {len(rows)} items, {len(rows[0]['choices'])} options")
    for name, score in heuristics.items():
        print(f"  {name:32s} accuracy {accuracy(rows, score):.3f}")


if __name__ == "__main__":
    main()
