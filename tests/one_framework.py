"""Run a command as on a machine where only one of the frameworks is installed.

A folder of links to every entry of this interpreter's site-packages except the
other framework's packages stands in for the site-packages of a one-framework
install; the interpreter runs with ``-S`` (no site-packages of its own) and that
folder plus the package's source on ``PYTHONPATH``. ``importlib.util.find_spec``
then returns None for the missing framework, exactly as after ``pip install
'boundary_xg[tensorflow]'`` alone (blocking the import in ``sys.modules`` would
not: its ``find_spec`` raises or reports it present).
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import boundary_xg

#: the packages (and their metadata) a ``[torch]`` or ``[tensorflow]`` install brings in
FRAMEWORK_PACKAGES = {
    "torch": ("torch", "functorch", "torchgen", "torchvision", "triton", "captum", "torchattacks", "nvidia"),
    "tensorflow": ("tensorflow", "keras", "tf_keras", "tensorboard", "tensorflow_cpu"),
}
SRC = str(Path(boundary_xg.__file__).resolve().parent.parent)


def _site_packages() -> List[str]:
    paths = [p for p in site.getsitepackages() if os.path.isdir(p)]
    return paths or [p for p in sys.path if p.endswith("site-packages")]


def site_without(framework: str, folder: Path) -> Path:
    """A site-packages folder of links to everything installed here but ``framework``'s packages."""
    blocked = FRAMEWORK_PACKAGES[framework]
    folder.mkdir(parents=True, exist_ok=True)
    for sp in _site_packages():
        for name in os.listdir(sp):
            root = name.split("-")[0].split(".")[0].lower()
            if any(root == b or root.startswith(b + "_") for b in blocked) or name.endswith(".pth"):
                continue
            link = folder / name
            if not link.exists():
                os.symlink(os.path.join(sp, name), link)
    return folder


def run_without(framework: str, args: List[str], tmp_path: Path, timeout: int = 300,
                env: Dict[str, str] = None, module: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m boundary_xg *args`` (``python *args`` with ``module=False``) with
    ``framework`` not installed, in ``tmp_path``."""
    site_dir = site_without(framework, tmp_path / f"site_without_{framework}")
    full_env = dict(os.environ, OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
                    MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join([str(site_dir), SRC]))
    full_env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # what a user's shell has: the package must quiet TF itself
    full_env.update(env or {})
    cmd = [sys.executable, "-S"] + (["-m", "boundary_xg"] if module else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=str(tmp_path))
