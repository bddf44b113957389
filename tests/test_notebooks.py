"""The example notebooks run top to bottom (nbclient, the current interpreter's kernel).

They are executed from the committed files, so a notebook that no longer runs
against the package fails here; their outputs are checked for the figures that
must hold whatever the random state (XG equals IG on the X-model).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import needs_tf, needs_torch

ROOT = Path(__file__).resolve().parents[1]
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


METHODS = ["SM", "IG", "SG", "XG", "DeepLIFT", "BSM", "BIG", "BSG", "BDT"]


def outputs_text(nb) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{out.get('ename')}: {out.get('evalue')}"
            text.append(out.get("text", ""))
    joined = "\n".join(text)
    for log in ("I0000", "oneDNN", "cpu_feature_guard", "absl::InitializeLog"):  # TensorFlow's start-up log
        assert log not in joined, f"TensorFlow's start-up log reached the notebook ({log})"
    return joined


def images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", []))


def run_notebook(name: str, monkeypatch) -> str:
    # the kernel inherits this environment: one thread per op suits the tiny models
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        monkeypatch.setenv(var, "1")
    # as in a user's shell: boundary_xg must keep TensorFlow's start-up log out of the notebook
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.delenv("BXG_ONLINE", raising=False)
    nb = nbformat.read(str(ROOT / name), as_version=4)
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    assert images(nb) >= 4  # the grid, the TruLens-style overlay, the sign panels, compare
    return outputs_text(nb)


def check(text: str) -> None:
    """What the notebook must show: every method computed, BIG vs IG, XG vs IG, distances."""
    assert "accuracy on 360 held-out digits" in text
    for name in METHODS:
        assert re.search(rf"^{name}\s+[0-9.]+ ms for 4 digits$", text, re.M), f"{name} not computed"
    assert "not registered" not in text and "skipped (" not in text
    m = re.search(r"X-model\s*: XG vs IG relative L1 difference ([0-9.e+-]+)", text)
    assert m and float(m.group(1)) < 1e-4, text
    m = re.search(r"completeness gap BIG: \[([^\]]*)\]", text)
    assert m and max(abs(float(v)) for v in m.group(1).split()) < 0.05, text
    assert "cosine(IG, BIG) per digit:" in text
    m = re.search(r"L2 distance to the boundary: \[([^\]]*)\]", text)
    assert m and all(0 < float(v) < 3 for v in m.group(1).split()), text
    assert "skipped: set BXG_ONLINE=1" in text


@needs_torch
def test_example_pytorch(monkeypatch):
    check(run_notebook("example_pytorch.ipynb", monkeypatch))


@needs_tf
def test_example_tensorflow(monkeypatch):
    check(run_notebook("example_tensorflow.ipynb", monkeypatch))


def test_notebooks_are_committed_with_current_outputs():
    """The committed files read well on a code host: every cell ran, with what the package gives today."""
    for name in ("example_pytorch.ipynb", "example_tensorflow.ipynb"):
        nb = nbformat.read(str(ROOT / name), as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        fix = f"{name}: run .venv/bin/python scripts/make_notebooks.py --execute"
        assert code and all(c.get("outputs") for c in code), fix
        assert images(nb) >= 4, fix
        try:
            check(outputs_text(nb))
        except AssertionError as err:
            raise AssertionError(f"{fix} (stale outputs: {err})") from None
