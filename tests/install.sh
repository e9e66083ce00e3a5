#!/usr/bin/env bash
# The README's install steps on a plain Debian 12 / Ubuntu box, run in a temporary venv: creates the
# venv, installs torch's CPU wheel, the build requirements and fastoptim, then imports it and runs
# `python -m fastoptim`. Not part of tests/run.sh (it downloads and builds everything again).
#
#     bash tests/install.sh                      # torch from PyTorch's CPU index, as the README says
#     TORCH_INDEX= bash tests/install.sh         # torch from pip's configured index (a local wheel server)
#
# Needs: g++, cmake, python3-dev and python3-venv (sudo apt-get install -y g++ cmake python3-dev python3-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
index=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
pip install -q torch==2.13.0 ${index:+--index-url "$index"}
pip install -q -r requirements.txt
pip install -q --no-build-isolation .
cd /tmp && python -m fastoptim && python -c "import fastoptim, torch; print('installed:', fastoptim.__file__)"
