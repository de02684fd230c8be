"""The layout a reader relies on: import arrows point down, and installing the project adds no generic module."""
import ast
import subprocess
import sys

from conftest import ROOT

# scripts -> data / weights / tokenizer -> model / runtime -> util; inherit.py is a script and the slicing library
LAYERS = {"util": 0, "model": 1, "fp8": 1, "runtime": 1, "lm": 1, "data": 2, "weights": 2, "tokenizer": 3, "inherit": 4, "growth": 4,
          "train": 5, "eval": 5, "prepare_owt": 5, "lazy_layers": 5, "demo": 6}


def imports(path):
    tree = ast.parse(path.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


def test_every_top_level_module_has_a_layer_and_imports_point_down():
    assert set(LAYERS) == {p.stem for p in ROOT.glob("*.py")}
    for name, layer in LAYERS.items():
        for other in imports(ROOT / f"{name}.py") & set(LAYERS):
            assert LAYERS[other] < layer, f"{name}.py imports {other}.py"
    users = [p for p in [*ROOT.glob("*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("experiments/*/*.py")]
             if "prepare_owt" in imports(p)]
    assert [p.name for p in users] in ([], ["prepare_throughput.py"])  # the writer is run, not imported


def test_installing_puts_no_module_of_ours_on_the_import_path(tmp_path):
    code = f"import importlib.util as u; print([m for m in {sorted(LAYERS)!r} if u.find_spec(m)])"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
