"""scripts/gpu_check.py, the GPU check script, run on the CPU (gloo instead of nccl) so the script itself is
known to work before a GPU machine runs it; each check prints one PASS line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_script_passes_every_check_on_the_cpu(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu", "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=1800, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("PASS", "FAIL", "SKIP"))]
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert [line.split()[1] for line in lines] == ["train", "evaluate", "search", "ddp"], lines
    assert all(line.startswith("PASS") for line in lines), lines
    assert "gloo, 1 process, world_size 1, status finished" in proc.stdout
