"""inheritune/util.py's failure paths: a write that fails (a full disk) keeps the earlier file and leaves no
temporary one, and Ctrl-C outside a training step is one line and exit code 130."""

import os
import re
from pathlib import Path

import pytest
import torch

from conftest import tree_hash
from inheritune import util
from inheritune.util import UserError, atomic_write, cli
from model import GPT, ModelConfig
from weights import save_checkpoint


def tiny_model(seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=32))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, which fails every write")
def test_a_checkpoint_written_to_a_full_disk_keeps_the_earlier_one(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, tiny_model(0))
    before = tree_hash(tmp_path)

    def temporary_file_on_a_full_disk(dir, prefix, suffix):
        tmp = Path(dir) / f"{prefix}full{suffix}"
        tmp.symlink_to("/dev/full")  # torch's writer then fails as on a full disk: RuntimeErrors from ENOSPC
        return os.open(os.devnull, os.O_RDONLY), str(tmp)

    monkeypatch.setattr(util.tempfile, "mkstemp", temporary_file_on_a_full_disk)
    message = f"no space left on the disk of {tmp_path}: {path} keeps its earlier contents; free some space"
    with pytest.raises(UserError, match=re.escape(message)):
        save_checkpoint(path, tiny_model(1))
    assert tree_hash(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


def test_a_failed_write_of_any_kind_is_one_line_and_leaves_nothing(tmp_path):
    def broken_writer(tmp):
        Path(tmp).write_text("half")
        raise ValueError("the writer broke\nwith a second line")

    with pytest.raises(UserError) as error:
        atomic_write(tmp_path / "x.json", broken_writer)
    assert str(error.value) == (
        f"writing {tmp_path / 'x.json'} failed (ValueError: the writer broke): {tmp_path / 'x.json'} was not "
        "written; choose another path"
    )
    assert os.listdir(tmp_path) == []


def test_ctrl_c_is_one_line_and_exit_code_130(capsys):
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        cli(interrupted, interrupted="interrupted: rerun the same command to resume")
    assert stop.value.code == 130
    assert capsys.readouterr().err == "interrupted: rerun the same command to resume\n"
