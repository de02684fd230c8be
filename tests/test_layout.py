"""The layout a reader relies on: the method at the top, its plumbing in one package, import arrows that point
down, short functions, and an install that adds the package but no generic module name."""

import ast
import subprocess
import sys

from conftest import ROOT

# The method and the scripts a user runs, by layer: a file imports only lower layers (and the package).
METHOD = {"model": 1, "formats": 2, "weights": 3, "layer_scores": 4, "growth": 4, "distill": 4, "inherit": 5,
          "train_config": 5, "train": 6, "eval": 6, "prepare_owt": 6, "lazy_layers": 6,
          "demo": 7}  # fmt: skip
# The package's modules, by layer: they import only the package's lower layers, never the method.
PLUMBING = {"util": 0, "losses": 0, "runtime": 1, "data": 1, "tokenizer": 1, "fp8": 1, "lm": 1,
            "tensor_files": 1, "runs": 2}  # fmt: skip
MAX_FUNCTION_LINES = 60


def python_files():
    return sorted(p for p in ROOT.rglob("*.py") if not {".venv", "build"} & set(p.relative_to(ROOT).parts))


def imports(path) -> set[str]:
    """What a file imports, anywhere in it: top-level names, and the package's modules as
    inheritune.<module>."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {
                alias.name if alias.name.startswith("inheritune.") else alias.name.split(".")[0]
                for alias in node.names
            }
        elif isinstance(node, ast.ImportFrom) and node.module == "inheritune":
            found |= {f"inheritune.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module if node.module.startswith("inheritune.") else node.module.split(".")[0])
    return found


def test_the_top_level_holds_the_method_and_the_package_its_plumbing():
    assert {p.stem for p in ROOT.glob("*.py")} == set(METHOD)
    assert {p.stem for p in (ROOT / "inheritune").glob("*.py")} == {*PLUMBING, "__init__"}


def test_imports_point_down():
    for name, layer in METHOD.items():
        for other in imports(ROOT / f"{name}.py") & set(METHOD):
            assert METHOD[other] < layer, f"{name}.py imports {other}.py"
    for name, layer in PLUMBING.items():
        found = imports(ROOT / "inheritune" / f"{name}.py")
        assert not found & set(METHOD), f"inheritune/{name}.py imports the method: {found & set(METHOD)}"
        for other in {m.removeprefix("inheritune.") for m in found if m.startswith("inheritune.")}:
            assert PLUMBING[other] < layer, f"inheritune/{name}.py imports inheritune/{other}.py"
    users = {p.name for p in python_files() if "prepare_owt" in imports(p) and p.parent.name != "tests"}
    # the writer is run, not imported: only its benchmark, and a corpus builder sharing its binary-data test
    assert users <= {"prepare_throughput.py", "offline_corpus.py"}, users


def test_no_function_is_longer_than_the_limit():
    long = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_installing_adds_the_package_and_no_module_named_like_the_scripts(tmp_path):
    code = (
        f"import importlib.util as u; print([m for m in {sorted(METHOD)!r} if u.find_spec(m)]); "
        f"print(u.find_spec('inheritune').origin)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    scripts, package = r.stdout.splitlines()
    assert scripts == "[]" and package == str(ROOT / "inheritune" / "__init__.py"), r.stdout
