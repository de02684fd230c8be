"""lm-eval `custom_dataset` for the task YAMLs in this folder: reads the JSONL files next to this file, so the
tasks load from any working directory and never touch the network."""

import json
from pathlib import Path

import datasets


def load(splits: dict, **_metadata):
    """splits: {split name: JSONL file name in this folder} -> a DatasetDict."""
    here = Path(__file__).resolve().parent

    def rows(name):
        return [json.loads(line) for line in (here / name).read_text().splitlines() if line.strip()]

    return datasets.DatasetDict(
        {split: datasets.Dataset.from_list(rows(name)) for split, name in splits.items()}
    )
