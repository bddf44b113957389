"""Every ```python block of README.md and docs/*.md runs as written.

Each block runs on its own, in a fresh namespace and an empty working folder, as a
reader who pastes it into a new Python session would run it: a block that needs
``model`` or ``plt`` must make them itself (the examples use the shipped digit
models, so nothing is downloaded and each block takes seconds).

A block that must not run says so on the line before its fence, with the reason::

    <!-- no-run: needs your own ImageNet files -->
    <!-- slow: trains a model for a minute -->      (runs with ``pytest -m slow``)

(or in the fence's info string: ```python no-run). Shell blocks (```bash) are not
Python and are not run; a block that names a framework is skipped where that
framework is not installed.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import List, NamedTuple

import pytest

from conftest import HAS_TF, HAS_TORCH

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
_MARK = re.compile(r"^<!--\s*(no-run|slow)\s*:?\s*(.*?)\s*-->\s*$")


class Block(NamedTuple):
    path: Path
    line: int  # of the opening fence, 1-based
    code: str
    mark: str  # "", "no-run" or "slow"
    reason: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> List[Block]:
    """The ```python blocks of a Markdown file, with the marker on the line before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        fence = lines[i].strip()
        if fence.startswith("```python"):
            info = fence[len("```python"):].strip()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            prev = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            m = _MARK.match(prev)
            mark, reason = (m.group(1), m.group(2)) if m else ("", "")
            if info.startswith(("no-run", "slow")):
                mark, reason = info.split()[0], info[len(info.split()[0]):].strip(" :")
            out.append(Block(path, i + 1, "\n".join(lines[i + 1:j]) + "\n", mark, reason))
            i = j
        i += 1
    return out


ALL = [b for p in DOCS for b in blocks(p)]


def _params():
    return [pytest.param(b, id=b.name, marks=[pytest.mark.slow] if b.mark == "slow" else []) for b in ALL]


def test_blocks_are_found_and_every_skip_says_why():
    assert len(ALL) >= 20, [b.name for b in ALL]
    for b in ALL:
        assert b.mark == "" or b.reason, f"{b.name}: say why it does not run (<!-- {b.mark}: reason -->)"


@pytest.mark.parametrize("block", _params())
def test_block_runs_as_written(block: Block, tmp_path, monkeypatch):
    if block.mark == "no-run":
        pytest.skip(f"marked no-run: {block.reason}")
    code = block.code
    if not HAS_TORCH and re.search(r"\btorch\b|\"torch\"", code):
        pytest.skip("needs torch")
    if not HAS_TF and re.search(r"\b(keras|tensorflow|tf)\b|\"tensorflow\"", code):
        pytest.skip("needs tensorflow")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        monkeypatch.setenv(var, "1")
    namespace = {"__name__": "__main__"}
    try:
        # a block's warnings are part of what it shows (a softmax switched off, a digit the
        # model gets wrong); each must come once, attributed to the block's own line
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            exec(compile(code, block.name, "exec"), namespace)
    finally:
        plt.close("all")
    ours = [(w.lineno, str(w.message)) for w in got if w.filename == block.name]
    assert len(ours) == len(set(ours)), f"a warning repeated within one call (one line): {ours}"
    stray = [f"{w.filename}:{w.lineno}: {w.message}" for w in got
             if w.filename != block.name and "boundary_xg" in w.filename]
    assert not stray, f"warnings attributed to boundary_xg's own lines: {stray}"


def test_relative_links_point_inside_the_repository():
    """A clone has every page the docs link to: README's design link is docs/architecture.md,
    not a file outside the repository."""
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    missing = []
    for path in DOCS + [ROOT / "docs" / "architecture.md"]:
        for target in link.findall(path.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+://", target):
                continue
            resolved = (path.parent / target).resolve()
            if ROOT not in resolved.parents or not resolved.exists():
                missing.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not missing, missing
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "shared/DESIGN.md" not in (ROOT / "README.md").read_text(encoding="utf-8")
