"""Every command's contract with the shell, each in a process of its own, started from another folder: a bad
input is one line on stderr and exit code 1, with no traceback and nothing written. (The messages themselves
are tested in this process, through each script's main.)"""

import subprocess
import sys

import pytest

from conftest import ROOT

# script: (arguments, the start of its one line); {missing} is a path that does not exist, {out} an output
COMMANDS = {
    "train.py": (["--batch_size=7", "--out_dir={out}"], "error: batch_size=7 is not divisible"),
    "inherit.py": (
        ["--ref", "{missing}", "--n_layer", "2", "--out", "{out}/x.pt"],
        "error: {missing}: no such",
    ),
    "eval.py": (["--ckpt", "{missing}", "--val_data", "{missing}"], "error: {missing}: no such"),
    "prepare_owt.py": (["--source", "{missing}", "--out", "{out}"], "error: --source {missing}: no such"),
    "lazy_layers.py": (
        ["--ref", "{missing}", "--data", "{missing}", "--out", "{out}"],
        "error: {missing}: no such",
    ),
}


@pytest.mark.parametrize("script", COMMANDS)
def test_a_bad_input_is_one_line_and_exit_code_1_and_nothing_written(script, tmp_path):
    paths = {"missing": str(tmp_path / "missing"), "out": str(tmp_path / "out")}
    args, start = COMMANDS[script]
    command = [sys.executable, str(ROOT / script), *(a.format(**paths) for a in args)]
    r = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith(start.format(**paths)), r.stderr[-2000:]
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "out").exists()
