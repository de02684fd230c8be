"""demo.py's reruns: nothing under out/demo is deleted, the demo's own runs continue and the tokenizer (which
the bins and the runs were made with) is trained once. The steps themselves are stood in for: the scripts they
run are tested on their own."""

import demo
import train
from conftest import tree_hash


def test_a_rerun_deletes_nothing_and_continues_the_demos_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    calls = []

    def train_tokenizer(path):
        calls.append("tokenizer")
        path.parent.mkdir(parents=True)
        path.write_text("{}")

    monkeypatch.setattr(demo, "train_tokenizer", train_tokenizer)
    monkeypatch.setattr(demo, "prepare", lambda tokenizer: calls.append("prepare"))
    monkeypatch.setattr(train, "main", lambda argv: calls.append(argv[0].rsplit("/", 1)[-1]))
    monkeypatch.setattr(demo, "report", lambda times, continued: calls.append(sorted(continued)))
    foreign = tmp_path / "out" / "demo" / "notes.txt"  # a file the user keeps there
    foreign.parent.mkdir(parents=True)
    foreign.write_text("mine")
    demo.main()
    assert calls == ["tokenizer", "prepare", "demo_ref8.py", "demo_inherit4.py", "demo_random4.py", []]
    (tmp_path / "out" / "demo" / "ref8").mkdir()  # what the first run left: the reference's run folder
    (tmp_path / "out" / "demo" / "ref8" / "ckpt.pt").write_bytes(b"a trained reference")
    before = tree_hash(tmp_path)
    calls.clear()
    demo.main()
    assert calls == ["prepare", "demo_ref8.py", "demo_inherit4.py", "demo_random4.py", ["reference"]]
    assert tree_hash(tmp_path) == before
    assert (
        "3. reference: 8 layers from scratch (continuing the earlier demo's run)" in capsys.readouterr().out
    )
