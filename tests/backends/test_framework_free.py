"""Outside ``backends/`` (and the shipped test-model builders in ``testing/``), the package is framework-free.

No module imports a framework, compares against a framework's name, loops over
a hard-coded list of framework names or keeps its own table of them: backend
identity lives in ``backends/<framework>/__init__.py`` and callers ask
``boundary_xg.backends``.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import List

import boundary_xg
from boundary_xg import backends

ROOT = Path(boundary_xg.__file__).parent
EXEMPT = ("backends", "testing")


def _framework_words() -> set:
    words = {"torchvision", "jax", "jaxlib"}
    for ident in backends._identity.identities():
        words |= {ident.name, ident.framework, *ident.roots, *ident.aliases}
    return {w.lower() for w in words}


def _offences(path: Path, words: set, shown: str = "") -> List[str]:
    tree = ast.parse(path.read_text())
    shown = shown or str(path.relative_to(ROOT.parent))
    out: List[str] = []

    def named(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in words

    def literal_with_name(node: ast.AST) -> bool:
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(named(e) for e in node.elts)

    for node in ast.walk(tree):
        where = f"{shown}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            out += [f"{where} imports {a.name}" for a in node.names if a.name.split(".")[0].lower() in words]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module \
                and node.module.split(".")[0].lower() in words:
            out.append(f"{where} imports from {node.module}")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and node.args[0].value.split(".")[0].lower() in words \
                and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("__import__", "import_module"):
            out.append(f"{where} imports {node.args[0].value} by name")
        elif isinstance(node, ast.Compare):
            if any(named(n) or literal_with_name(n) for n in [node.left, *node.comparators]):
                out.append(f"{where} compares with a framework's name")
        elif isinstance(node, (ast.For, ast.comprehension)) and literal_with_name(node.iter):
            out.append(f"{where} loops over framework names")
        elif isinstance(node, ast.Dict) and sum(named(k) for k in node.keys if k is not None) >= 2:
            out.append(f"{where} keeps a table keyed by framework names")
    return out


def test_no_module_outside_backends_names_a_framework():
    words = _framework_words()
    found: List[str] = []
    for p in sorted(ROOT.rglob("*.py")):
        if p.relative_to(ROOT).parts[0] in EXEMPT:
            continue
        found += _offences(p, words)
    assert found == [], "\n".join(found)


def test_the_check_sees_what_it_forbids(tmp_path):
    """The scanner flags each kind of offence (so a pass above means something)."""
    bad = tmp_path / "probe.py"
    bad.write_text(
        "import torch\nfrom tensorflow import keras\nimport importlib\nimportlib.import_module('torch.nn')\n"
        "def f(b, m):\n    if b.name == 'torch':\n        pass\n    if m in ('tf', 'keras'):\n        pass\n"
        "    for n in ('torch', 'tensorflow'):\n        pass\n    return {'torch': 1, 'tensorflow': 2}\n")
    found = _offences(bad, _framework_words(), "probe.py")
    kinds = sorted(f.split(" ", 1)[1] for f in found)
    assert kinds == sorted(["imports torch", "imports from tensorflow", "imports torch.nn by name",
                            "compares with a framework's name", "compares with a framework's name",
                            "loops over framework names", "keeps a table keyed by framework names"]), found
