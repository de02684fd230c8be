"""pyproject.toml: an installed wheel holds every top-level module the packaged scripts import."""
import ast
import tomllib

from conftest import ROOT


def test_packaged_modules_import_only_packaged_modules():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["py-modules"])
    local = {p.stem for p in ROOT.glob("*.py")}
    for name in listed:
        tree = ast.parse((ROOT / f"{name}.py").read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        missing = (imported & local) - listed
        assert not missing, f"{name}.py imports {sorted(missing)}: add them to py-modules in pyproject.toml"
