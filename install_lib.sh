#!/usr/bin/env bash
# Creates .venv and installs boundary_xg with everything the README's commands need:
# both frameworks, the visualiser and the test tools. The pins in constraints.txt
# choose the wheels that lie on this project's machines; the package itself keeps
# open requirements (torch>=2.2, tensorflow>=2.16).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# tensorflow-cpu stands in for the [tensorflow] extra: same modules, no CUDA.
.venv/bin/python -m pip install -q -c constraints.txt \
  "tensorflow-cpu" -e ".[torch,viz,test]" "tqdm>=4.60"
echo "boundary_xg installed in .venv"
