"""Optional compiled Hamming kernels (ctypes): the evaluator's fused pass and the MIH search loops.

The C source is ``hashkit/hamming/kernel.c`` (package data, so it can be read, diffed and compiled
by tools). :func:`load` compiles it with the system compiler (``cc -O3 -march=native``) on first
use and caches the shared library under ``hashkit.paths.cache_root()/kernels/<hash>.so``; the hash
covers the source, the flags, the compiler and the CPU, so a cache shared between machines never
serves code built for another CPU. The library is compiled to a temporary file and renamed into
place, so concurrent first uses are safe. Without a compiler, when compiling or loading fails, or
with ``HASHKIT_NO_KERNELS=1``, :func:`load` returns ``None`` (one debug log line) and
hashkit.evaluate uses its numpy path, which gives the same numbers.

What one call of ``hk_eval_rows`` computes for each query row i (definitions: hashkit.evaluate):

1. distances to every database item by XOR + popcount (uint8 when bits <= 255, else uint16) and a
   64-bit relevance mask per block of 64 items: a byte-table lookup per label-pattern id when the
   database has <= 256 distinct label rows (the table is the query's relevance to each pattern),
   else a test of 64-bit label words when there are <= 64 classes, else an int32 pattern-id lookup;
2. one pass over the blocks: for each relevant item j at distance v it records
   ``b_j = #items at distance v with index <= j`` (the histogram so far plus a vector compare inside
   the block) and ``a_j = #relevant items at distance v with index <= j``; then the block's items are
   added to the histogram (four interleaved sub-histograms break store-to-load dependency chains).
   When the metrics look only at the top kmax ranks (mAP@k, P@N) with kmax <= nd / 4, this pass
   only counts, and a second pass visits just the items up to the distance bucket that holds rank
   kmax, counting ranks there. Without histogram outputs the first pass counts only the items under
   a cut (the previous query's bucket of rank kmax plus a margin) and lists them; a query with fewer
   than kmax items under the cut is redone with the full histogram and the margin grows, so the
   guess never changes a result. The histogram, otherwise as costly as the distances, then costs
   next to nothing at @1000 / @5000;
3. from the histogram, N_<v and R_<v (items / relevant items closer than v): relevant item j has
   rank ``N_<v + b_j`` and is the ``(R_<v + a_j)``-th relevant item of the ranking, so one scatter
   gives the increasing array ``SR[R] = rank of the (R+1)-th relevant item``. AP@k is then
   ``mean over R < found of (R + 1) / SR[R]`` with ``found = #{SR <= k}`` (a binary search; the
   divisions are vectorised and summed in numpy's pairwise order, so every path, the numpy one
   included, gives bit-for-bit the same AP), and the hits of P@N are ``#{SR <= N}``. This is
   exactly the stable (distance, index) ranking, without sorting anything.

The work per query is one vectorised pass over the codes, one histogram increment per item and a
few operations per relevant item; the histograms alone (``pr_curve``) skip the relevant-item
bookkeeping. ``hk_tile_distances`` gives the native search engine (hashkit.index.native) its
distance tiles from the same popcount paths.

Instruction sets: the library is built with ``-march=native`` for the CPU at hand, so the paths
compiled in are the best it has: AVX-512 (VPOPCNTDQ popcounts, BW/VBMI compares and table lookups);
else AVX2 (popcount by nibble lookup with ``vpshufb`` and byte sums with ``vpsadbw``, relevance by
``vpshufb`` over the label-pattern table or a 256-bit set of patterns, compares by ``vpmovmskb``);
else scalar C with hardware POPCNT; else portable C. ``HASHKIT_KERNEL_ISA`` (levels: ISA_LEVELS)
builds a lower level on purpose, e.g. ``avx2`` on an AVX-512 machine runs exactly the code an
AVX2-only CPU gets; tests run every level the CPU can (:func:`available_isas`) against the numpy
path and require identical numbers. Threads: the caller splits the queries into row ranges and
calls from several threads (ctypes releases the GIL).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from loguru import logger

from hashkit.errors import HashkitError
from hashkit.paths import cache_root

__all__ = ["load", "disabled", "paths", "available_isas", "selected_isa", "SOURCE", "ENV_DISABLE", "ENV_ISA"]

ENV_DISABLE = "HASHKIT_NO_KERNELS"

SOURCE_FILE = Path(__file__).with_name("kernel.c")
# the C source, read once; tests may replace it (the cache key covers it)
SOURCE = SOURCE_FILE.read_text(encoding="utf-8")

_lock = threading.Lock()
_state: dict[str, object] = {}  # ISA level -> the loaded CDLL, or None after a failed attempt


def disabled() -> bool:
    """True when ``HASHKIT_NO_KERNELS`` is set to anything but '' or '0' (forces the numpy path)."""
    return os.environ.get(ENV_DISABLE, "") not in ("", "0")


def _cpu_id() -> str:
    """Machine, CPU model and feature flags: part of the cache key because of -march=native."""
    parts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    parts.append(line.strip())
                if len(parts) > 6:
                    break
    except OSError:
        pass
    return "\n".join(parts)


def _compile(cc: str, flags: list[str], target: Path) -> bool:
    """Compile SOURCE into ``target`` through a temporary file in the same folder, then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        src = Path(tmp) / "hashkit_kernels.c"
        src.write_text(SOURCE)
        out = Path(tmp) / target.name
        proc = subprocess.run(
            [cc, *flags, str(src), "-o", str(out)], capture_output=True, text=True, timeout=120
        )
        if proc.returncode != 0:
            logger.debug(f"hashkit kernels: {cc} {' '.join(flags)} failed: {proc.stderr.strip()[:500]}")
            return False
        os.replace(out, target)  # atomic: a concurrent compile of the same key writes the same code
    return True


# Instruction-set levels: name -> (compiler flags, CPU flags of /proc/cpuinfo the level needs).
# "native" (the default) compiles for the CPU at hand, so the vector paths of kernel.c that this CPU
# has are the ones compiled in (AVX-512 VPOPCNTDQ/BW/VBMI, else AVX2, else scalar POPCNT); the others
# build a lower level on purpose, so every path this machine can run can be tested and benchmarked
# (HASHKIT_KERNEL_ISA=avx2 gives an AVX-512 machine the code an AVX2-only one runs). All give
# bit-for-bit the same numbers.
ISA_LEVELS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "native": (("-O3", "-march=native"), frozenset()),
    "avx2": (("-O3", "-march=x86-64-v3", "-mtune=generic"), frozenset({"avx2", "bmi2", "popcnt", "fma"})),
    "popcnt": (("-O3", "-march=x86-64-v2", "-mtune=generic"), frozenset({"popcnt", "sse4_2", "ssse3"})),
    "portable": (("-O3",), frozenset()),
}
ENV_ISA = "HASHKIT_KERNEL_ISA"
X86_ONLY = ("avx2", "popcnt")

# compiler flags tried in order for "native"; -march=native is safe because the cache key includes the CPU
FLAG_SETS: tuple[tuple[str, ...], ...] = (ISA_LEVELS["native"][0], ISA_LEVELS["portable"][0])


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none); read once."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def available_isas() -> list[str]:
    """The levels this CPU can run, best first: native, then the lower x86 levels it has, portable."""
    flags = _cpu_flags()
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    lower = [n for n in X86_ONLY if x86 and ISA_LEVELS[n][1] <= flags]
    return ["native", *lower, "portable"]


def selected_isa() -> str:
    """The level :func:`load` builds: ``HASHKIT_KERNEL_ISA`` when set, else "native"."""
    name = os.environ.get(ENV_ISA, "").strip() or "native"
    if name not in ISA_LEVELS:
        raise HashkitError(f"{ENV_ISA}={name!r}: choose one of {', '.join(ISA_LEVELS)} (or unset it)")
    if name != "native" and name not in available_isas():
        raise HashkitError(
            f"{ENV_ISA}={name!r}: this CPU cannot run it; choose one of {', '.join(available_isas())}"
        )
    return name


def _build(flag_sets: tuple[tuple[str, ...], ...] = FLAG_SETS) -> ctypes.CDLL | None:
    """Compile (or reuse from the cache) and load the library with the first flag set that works."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        logger.debug("hashkit kernels: no C compiler found (cc/gcc/clang); using the numpy path")
        return None
    cc = shutil.which(cc) or cc
    folder = cache_root() / "kernels"
    for flags in flag_sets:
        full = [*flags, "-shared", "-fPIC"]
        key = hashlib.sha256("\0".join([SOURCE, cc, *full, _cpu_id()]).encode()).hexdigest()[:24]
        target = folder / f"{key}.so"
        lib = None
        for attempt in range(2):  # a cached file that does not load is rebuilt once
            try:
                if attempt:
                    target.unlink(missing_ok=True)
                if not target.exists() and not _compile(cc, full, target):
                    break
                lib = ctypes.CDLL(str(target))
                break
            except (OSError, subprocess.SubprocessError) as exc:
                logger.debug(f"hashkit kernels: building/loading {target} failed ({exc})")
        if lib is None:
            continue
        if lib.hk_abi_version() != 3 or lib.hk_mih_abi_version() != 2:
            continue
        fn = lib.hk_eval_rows
        p = ctypes.c_void_p
        i64, i32 = ctypes.c_int64, ctypes.c_int32
        fn.argtypes = [p, p, i32, i64, i32, p, p, p, i64, p, p, i64, i64, i64, p, i32, p, p, p, p, p]
        fn.restype = ctypes.c_int
        # multi-index hashing (hashkit.hamming.mih): k-NN, radius, table build
        lib.hk_mih_knn.argtypes = [p, i32, i64, i32, p, p, p, p, p, p, p, i64, i64, i64, p, p, p]
        lib.hk_mih_knn.restype = ctypes.c_int
        lib.hk_mih_range.argtypes = [p, i32, i64, i32, p, p, p, p, p, p, p, i64, i64, i32, i64, p, p, p, p]
        lib.hk_mih_range.restype = ctypes.c_int64
        lib.hk_mih_build.argtypes = [p, i64, i32, p, p]
        lib.hk_mih_build.restype = None
        lib.hk_mih_keys.argtypes = [p, i64, i32, i32, i32, p]
        lib.hk_mih_keys.restype = None
        lib.hk_tile_distances.argtypes = [p, i64, p, i64, i32, i64, p, i32]  # hashkit.index.native
        lib.hk_tile_distances.restype = None
        lib.hk_paths.argtypes = []
        lib.hk_paths.restype = ctypes.c_char_p
        logger.debug(f"hashkit kernels: loaded {target} ({' '.join(flags)})")
        return lib
    logger.debug("hashkit kernels: compilation failed; using the numpy path")
    return None


def load(isa: str | None = None) -> ctypes.CDLL | None:
    """The compiled kernel library (built and cached on first use), or None to use the numpy path.

    ``isa``: a level of ISA_LEVELS; default :func:`selected_isa` (``HASHKIT_KERNEL_ISA`` or "native").
    """
    if disabled():
        return None
    name = isa or selected_isa()
    if name not in _state:
        with _lock:
            if name not in _state:
                flags = FLAG_SETS if name == "native" else (ISA_LEVELS[name][0],)
                _state[name] = _build(flags)
    return _state[name]  # type: ignore[return-value]


def paths(lib: ctypes.CDLL) -> str:
    """The vector paths compiled into ``lib``, e.g. "avx512-vpopcntdq+bw+vbmi", "avx2", "popcnt"."""
    return lib.hk_paths().decode()
