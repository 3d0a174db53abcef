#!/usr/bin/env bash
# JupyterLab on the project's notebooks, in the project's environment (make lab).
# Registers the environment's kernel, "Python (uncertainty-lr)", inside that
# environment (ipykernel install --sys-prefix: nothing is written outside it), then
# starts JupyterLab at the repository root with the notebooks folder open. Arguments
# go to `jupyter lab` (e.g. --no-browser --port=8890).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m ipykernel install --sys-prefix --name uncertainty-lr \
  --display-name "Python (uncertainty-lr)" >/dev/null
exec python -m jupyter lab --ServerApp.root_dir="$PWD" \
  --LabApp.default_url=/lab/tree/notebooks "$@"
