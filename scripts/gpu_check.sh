#!/usr/bin/env bash
# Exercise every CUDA path of hashkit (training on --gpu 0, the CUDA evaluator against the CPU one, the torch
# search engine against the native one, nccl DDP with one process); one line per check. Needs a GPU, no data
# and no internet. Usage: bash scripts/gpu_check.sh [--device cuda:0] [--only train,evaluate,search,ddp]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" scripts/gpu_check.py "$@"
