#!/usr/bin/env bash
# Images/s of `hashkit encode` in one process and under torchrun with 1 and 2 processes (gloo, CPU), and a
# check that every index equals the single-process one (codes, ids, order).
#   bash scripts/bench_distributed_encode.sh CHECKPOINT IMAGES_FOLDER [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt=${1:?checkpoint}; images=${2:?images folder}; out=${3:-$(mktemp -d)}
mkdir -p "$out"
count=$(find "$images" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | wc -l)
run() {
  local name=$1; shift
  rm -rf "$out/$name.index"
  local t0 t1; t0=$(date +%s.%N)
  "$@" --checkpoint "$ckpt" --images "$images" --out "$out/$name.index" >"$out/$name.log" 2>&1
  t1=$(date +%s.%N)
  python3 -c "import sys; n, s = int(sys.argv[2]), float(sys.argv[4]) - float(sys.argv[3]); print(f'{sys.argv[1]}: {n} images in {s:.1f} s, {n / s:.1f} img/s')" "$name" "$count" "$t0" "$t1"
}
run single .venv/bin/hashkit encode
run torchrun-1 .venv/bin/torchrun --standalone --nproc-per-node 1 -m hashkit encode
run torchrun-2 .venv/bin/torchrun --standalone --nproc-per-node 2 -m hashkit encode
.venv/bin/python - "$out" <<'PY'
import sys
import numpy as np
from hashkit.index import Index
out = sys.argv[1]
a = Index.open(f"{out}/single.index")
for name in ("torchrun-1", "torchrun-2"):
    b = Index.open(f"{out}/{name}.index")
    same = len(a) == len(b) and np.array_equal(a.codes(), b.codes()) and list(a.ids(np.arange(len(a)))) == list(b.ids(np.arange(len(b))))
    print(f"{name}: {b.num_segments} segment(s), identical codes, ids and order: {same}")
    assert same
PY
