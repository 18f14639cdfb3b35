"""Optional compiled accelerator for the CPU evaluator: one fused C pass per query (ctypes).

:func:`load` compiles the C source below with the system compiler (``cc -O3 -march=native``) on first
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
   only builds the histogram, and a second pass visits just the items up to the distance bucket
   that holds rank kmax (a vector compare per block), counting ranks there;
3. from the histogram, N_<v and R_<v (items / relevant items closer than v): relevant item j has
   rank ``N_<v + b_j`` and is the ``(R_<v + a_j)``-th relevant item of the ranking, so one scatter
   gives the increasing array ``SR[R] = rank of the (R+1)-th relevant item``. AP@k is then
   ``mean over R < found of (R + 1) / SR[R]`` with ``found = #{SR <= k}`` (a binary search; the
   divisions are vectorised), and the hits of P@N are ``#{SR <= N}``. This is exactly the stable
   (distance, index) ranking, without sorting anything.

The work per query is one vectorised pass over the codes, one histogram increment per item and a
few operations per relevant item; the histograms alone (``pr_curve``) skip the relevant-item
bookkeeping. Vector paths use AVX-512 (VPOPCNTDQ, BW, VBMI) when the compiling CPU has it; plain C
paths (tested by building without -march=native) cover every other CPU. Threads: the caller splits
the queries into row ranges and calls from several threads (ctypes releases the GIL).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from loguru import logger

from hashkit.paths import cache_root

__all__ = ["load", "disabled", "SOURCE", "ENV_DISABLE"]

ENV_DISABLE = "HASHKIT_NO_KERNELS"

SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define HK_AVX512 1
#endif

#define BLK 64 /* items per block: one 64-bit relevance mask */
#define NSUB 4 /* interleaved sub-histograms */

/* distance of database item j (global index) to query words qw */
static inline uint32_t hk_dist(const uint64_t *qw, const uint64_t *db, int W, int64_t j) {
  uint32_t s = 0;
  for (int w = 0; w < W; w++) s += (uint32_t)__builtin_popcountll(qw[w] ^ db[j * W + w]);
  return s;
}

/* pass 1 for one query: distances into d (uint8 or uint16) and relevance masks per block */
static inline __attribute__((always_inline)) void hk_pass1(
    const uint64_t *qw, const uint64_t *db, int W, int64_t nd, const uint8_t *pid8,
    const int32_t *pid32, const uint8_t *tab, int64_t U, const uint64_t *dlab, uint64_t qlab,
    void *dbuf, int wide, uint64_t *relm) {
  (void)U;
  int64_t nblk = (nd + BLK - 1) / BLK;
  uint8_t *d8 = (uint8_t *)dbuf;
  uint16_t *d16 = (uint16_t *)dbuf;
#ifdef HK_AVX512
  const __m512i qv = _mm512_set1_epi64((long long)qw[0]);
  const __m512i qlv = _mm512_set1_epi64((long long)qlab);
  const long long q1 = W >= 2 ? (long long)qw[1] : 0, q0 = (long long)qw[0];
  const __m512i q2 = _mm512_setr_epi64(q0, q1, q0, q1, q0, q1, q0, q1);
  const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
  const __m512i odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
#endif
#if defined(HK_AVX512) && defined(__AVX512VBMI__)
  const __m512i t0 = _mm512_loadu_si512(tab), t1 = _mm512_loadu_si512(tab + 64);
  const __m512i t2 = _mm512_loadu_si512(tab + 128), t3 = _mm512_loadu_si512(tab + 192);
#endif
  for (int64_t b = 0; b < nblk; b++) {
    int64_t base = b * BLK;
    int n = (int)(nd - base < BLK ? nd - base : BLK);
    uint64_t m = 0;
    int done = 0;
#ifdef HK_AVX512
#ifdef __AVX512VPOPCNTDQ__
    if (W == 1 && n == BLK) {
      const uint64_t *x = db + base;
      for (int g = 0; g < BLK / 8; g++) {
        __m512i c = _mm512_popcnt_epi64(_mm512_xor_si512(qv, _mm512_loadu_si512(x + 8 * g)));
        if (wide) _mm_storeu_si128((__m128i *)(d16 + base + 8 * g), _mm512_cvtepi64_epi16(c));
        else _mm_storel_epi64((__m128i *)(d8 + base + 8 * g), _mm512_cvtepi64_epi8(c));
      }
      done = 1;
    } else if (W == 2 && n == BLK) { /* 65..128 bits: two words per item, lanes paired up */
      const uint64_t *x = db + 2 * base;
      for (int g = 0; g < BLK / 8; g++) {
        __m512i a = _mm512_popcnt_epi64(_mm512_xor_si512(q2, _mm512_loadu_si512(x + 16 * g)));
        __m512i e = _mm512_popcnt_epi64(_mm512_xor_si512(q2, _mm512_loadu_si512(x + 16 * g + 8)));
        __m512i c = _mm512_add_epi64(_mm512_permutex2var_epi64(a, even, e),
                                     _mm512_permutex2var_epi64(a, odd, e));
        if (wide) _mm_storeu_si128((__m128i *)(d16 + base + 8 * g), _mm512_cvtepi64_epi16(c));
        else _mm_storel_epi64((__m128i *)(d8 + base + 8 * g), _mm512_cvtepi64_epi8(c));
      }
      done = 1;
    }
#endif
#endif
    if (!done) {
      for (int t = 0; t < n; t++) {
        uint32_t v = hk_dist(qw, db, W, base + t);
        if (wide) d16[base + t] = (uint16_t)v; else d8[base + t] = (uint8_t)v;
      }
    }
    done = 0;
    if (dlab) { /* label words: relevant when a label is shared */
#ifdef HK_AVX512
      if (n == BLK) {
        for (int g = 0; g < BLK / 8; g++)
          m |= (uint64_t)_mm512_test_epi64_mask(qlv, _mm512_loadu_si512(dlab + base + 8 * g)) << (8 * g);
        done = 1;
      }
#endif
      if (!done)
        for (int t = 0; t < n; t++) m |= (uint64_t)((qlab & dlab[base + t]) != 0) << t;
    } else if (pid8) {
#if defined(HK_AVX512) && defined(__AVX512VBMI__)
      if (n == BLK) {
        __m512i pv = _mm512_loadu_si512(pid8 + base), r;
        if (U <= 64) {
          r = _mm512_permutexvar_epi8(pv, t0);
        } else {
          __m512i lo = _mm512_permutex2var_epi8(t0, pv, t1);
          __m512i hi = _mm512_permutex2var_epi8(t2, pv, t3);
          r = _mm512_mask_blend_epi8(_mm512_movepi8_mask(pv), lo, hi);
        }
        m = (uint64_t)_mm512_test_epi8_mask(r, r);
        done = 1;
      }
#endif
      if (!done)
        for (int t = 0; t < n; t++) m |= (uint64_t)(tab[pid8[base + t]] != 0) << t;
    } else {
      for (int t = 0; t < n; t++) m |= (uint64_t)(tab[pid32[base + t]] != 0) << t;
    }
    relm[b] = m;
  }
}

/* number of items t < p of a block with distance v */
static inline __attribute__((always_inline)) uint32_t hk_before(
    const void *blk, int p, uint32_t v, int wide) {
#ifdef HK_AVX512
  uint64_t low = (p == 0) ? 0 : (~0ULL >> (64 - p));
  uint64_t eq;
  if (wide) {
    const uint16_t *x = (const uint16_t *)blk;
    __m512i vv = _mm512_set1_epi16((short)v);
    eq = (uint64_t)_mm512_cmpeq_epi16_mask(_mm512_loadu_si512(x), vv) |
         ((uint64_t)_mm512_cmpeq_epi16_mask(_mm512_loadu_si512(x + 32), vv) << 32);
  } else {
    eq = _mm512_cmpeq_epi8_mask(_mm512_loadu_si512(blk), _mm512_set1_epi8((char)v));
  }
  return (uint32_t)__builtin_popcountll(eq & low);
#else
  uint32_t c = 0;
  if (wide) { const uint16_t *x = (const uint16_t *)blk; for (int t = 0; t < p; t++) c += x[t] == v; }
  else { const uint8_t *x = (const uint8_t *)blk; for (int t = 0; t < p; t++) c += x[t] == v; }
  return c;
#endif
}

/* SR[Rlt[v] + a - 1] = Nlt[v] + b for each list entry (v, a, b); scalar: gathers/scatters are slow */
#if defined(__clang__)
static void hk_scatter_ranks(const uint16_t *LV, const uint32_t *LA, const uint32_t *LB, int64_t L,
                             const int64_t *Nlt, const int64_t *Rlt, uint32_t *SR) {
#pragma clang loop vectorize(disable)
#else
__attribute__((optimize("no-tree-vectorize")))
static void hk_scatter_ranks(const uint16_t *LV, const uint32_t *LA, const uint32_t *LB, int64_t L,
                             const int64_t *Nlt, const int64_t *Rlt, uint32_t *SR) {
#endif
  for (int64_t t = 0; t < L; t++) {
    uint32_t v = LV[t];
    SR[Rlt[v] + LA[t] - 1] = (uint32_t)(Nlt[v] + LB[t]);
  }
}

/* Second pass for small k: SR for the relevant items up to the bucket vc holding rank kmax, visiting
   only the items with distance <= vc in index order (counts per bucket give their ranks). Returns
   the number of SR entries (relevant items with distance <= vc). */
static int64_t hk_top_ranks(const void *dbuf, int wide, const uint64_t *relm, int64_t nd, int64_t nb,
                            int64_t kmax, const int64_t *Nlt, const int64_t *Rlt,
                            const uint32_t *hrel, uint32_t *cnt, uint32_t *SR) {
  int64_t vc = 0;
  while (vc + 1 < nb && Nlt[vc + 1] < kmax) vc++; /* Nlt[vc] < kmax <= Nlt[vc + 1] */
  uint32_t *crel = cnt + nb;
  memset(cnt, 0, (size_t)2 * nb * sizeof(uint32_t));
  int64_t nblk = (nd + BLK - 1) / BLK;
  for (int64_t b = 0; b < nblk; b++) {
    int64_t base = b * BLK;
    int n = (int)(nd - base < BLK ? nd - base : BLK);
    const uint8_t *d8 = (const uint8_t *)dbuf + base;
    const uint16_t *d16 = (const uint16_t *)dbuf + base;
    uint64_t sel = 0;
#ifdef HK_AVX512
    if (wide) {
      __m512i c = _mm512_set1_epi16((short)vc);
      sel = (uint64_t)_mm512_cmple_epu16_mask(_mm512_loadu_si512(d16), c) |
            ((uint64_t)_mm512_cmple_epu16_mask(_mm512_loadu_si512(d16 + 32), c) << 32);
    } else {
      sel = _mm512_cmple_epu8_mask(_mm512_loadu_si512(d8), _mm512_set1_epi8((char)vc));
    }
#else
    for (int t = 0; t < n; t++) sel |= (uint64_t)((wide ? d16[t] : d8[t]) <= vc) << t;
#endif
    if (n < BLK) sel &= (1ULL << n) - 1;
    uint64_t rel = relm[b];
    while (sel) {
      int p = __builtin_ctzll(sel);
      sel &= sel - 1;
      uint32_t v = wide ? d16[p] : d8[p];
      uint32_t c = ++cnt[v];
      if ((rel >> p) & 1) SR[Rlt[v] + crel[v]++] = (uint32_t)(Nlt[v] + c);
    }
  }
  return Rlt[vc] + hrel[vc];
}

/* number of entries <= x in the increasing array a[0..n) */
static inline int64_t hk_count_le(const uint32_t *a, int64_t n, int64_t x) {
  int64_t lo = 0, hi = n;
  while (lo < hi) { int64_t mid = lo + (hi - lo) / 2; if ((int64_t)a[mid] <= x) lo = mid + 1; else hi = mid; }
  return lo;
}

/* sum over R < n of (R + 1) / sr[R]: the precisions at the relevant positions */
static double hk_prec_sum(const uint32_t *sr, int64_t n) {
  int64_t R = 0;
  double s = 0.0;
#ifdef HK_AVX512
  __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
  __m512d num = _mm512_setr_pd(1, 2, 3, 4, 5, 6, 7, 8), step = _mm512_set1_pd(8.0);
  for (; R + 16 <= n; R += 16) {
    __m512d d0 = _mm512_cvtepu32_pd(_mm256_loadu_si256((const __m256i *)(sr + R)));
    __m512d d1 = _mm512_cvtepu32_pd(_mm256_loadu_si256((const __m256i *)(sr + R + 8)));
    acc0 = _mm512_add_pd(acc0, _mm512_div_pd(num, d0));
    num = _mm512_add_pd(num, step);
    acc1 = _mm512_add_pd(acc1, _mm512_div_pd(num, d1));
    num = _mm512_add_pd(num, step);
  }
  s = _mm512_reduce_add_pd(_mm512_add_pd(acc0, acc1));
#endif
  for (; R < n; R++) s += (double)(R + 1) / (double)sr[R];
  return s;
}

static inline __attribute__((always_inline)) int hk_rows(
    const uint64_t *q, const uint64_t *db, int W, int64_t nd, int bits, const uint8_t *pid8,
    const int32_t *pid32, const uint8_t *relq, int64_t U, const uint64_t *dlab,
    const uint64_t *qlab, int64_t lo, int64_t hi, int64_t k, const int64_t *ns, int nn, double *ap,
    int64_t *hits, int64_t *hist_all, int64_t *hist_rel, int64_t *n_rel, int wide) {
  int64_t nblk = (nd + BLK - 1) / BLK, nb = (int64_t)bits + 1;
  int64_t kmax = k; /* the deepest rank any requested metric looks at */
  for (int c = 0; c < nn; c++) kmax = ns[c] > kmax ? ns[c] : kmax;
  /* few ranks needed: histogram first, then visit only the items up to the bucket holding rank
     kmax; otherwise record every relevant item during the histogram pass */
  int two_pass = kmax > 0 && kmax * 4 <= nd;
  int need_list = kmax > 0 && !two_pass;
  size_t esz = wide ? 2 : 1;
  void *dbuf = malloc((size_t)(nblk + 1) * BLK * esz);
  uint64_t *relm = (uint64_t *)malloc((size_t)(nblk + 1) * sizeof(uint64_t));
  uint32_t *H = (uint32_t *)malloc((size_t)NSUB * nb * sizeof(uint32_t));
  uint32_t *hrel = (uint32_t *)malloc((size_t)nb * sizeof(uint32_t));
  int64_t *Nlt = (int64_t *)malloc((size_t)nb * sizeof(int64_t));
  int64_t *Rlt = (int64_t *)malloc((size_t)nb * sizeof(int64_t));
  uint8_t *tab = (uint8_t *)malloc(pid8 ? 256 : (size_t)(U > 0 ? U : 1));
  uint16_t *LV = need_list ? (uint16_t *)malloc((size_t)nd * sizeof(uint16_t)) : NULL;
  uint32_t *LA = need_list ? (uint32_t *)malloc((size_t)nd * sizeof(uint32_t)) : NULL;
  uint32_t *LB = need_list ? (uint32_t *)malloc((size_t)nd * sizeof(uint32_t)) : NULL;
  uint32_t *SR = kmax > 0 ? (uint32_t *)malloc((size_t)nd * sizeof(uint32_t)) : NULL;
  uint32_t *cnt = two_pass ? (uint32_t *)malloc((size_t)2 * nb * sizeof(uint32_t)) : NULL;
  int ok = dbuf && relm && H && hrel && Nlt && Rlt && tab && (!need_list || (LV && LA && LB)) &&
           (kmax == 0 || SR) && (!two_pass || cnt);
  if (ok) memset(dbuf, 0, (size_t)(nblk + 1) * BLK * esz);
  for (int64_t i = lo; ok && i < hi; i++) {
    if (relq) { /* this query's relevance to each label pattern, as a byte table */
      const uint8_t *rq = relq + (i - lo) * U;
      if (pid8) memset(tab, 0, 256);
      for (int64_t u = 0; u < U; u++) tab[u] = rq[u] ? 0xFF : 0;
    }
    hk_pass1(q + i * W, db, W, nd, pid8, pid32, tab, U, dlab, qlab ? qlab[i] : 0, dbuf, wide, relm);
    memset(H, 0, (size_t)NSUB * nb * sizeof(uint32_t));
    memset(hrel, 0, (size_t)nb * sizeof(uint32_t));
    uint32_t *H0 = H, *H1 = H + nb, *H2 = H + 2 * nb, *H3 = H + 3 * nb;
    int64_t L = 0;
    for (int64_t b = 0; b < nblk; b++) {
      int64_t base = b * BLK;
      int n = (int)(nd - base < BLK ? nd - base : BLK);
      const uint8_t *d8 = (const uint8_t *)dbuf + base;
      const uint16_t *d16 = (const uint16_t *)dbuf + base;
      const void *blk = wide ? (const void *)d16 : (const void *)d8;
      uint64_t m = relm[b];
      if (need_list) {
        while (m) {
          int p = __builtin_ctzll(m);
          m &= m - 1;
          uint32_t v = wide ? d16[p] : d8[p];
          LB[L] = H0[v] + H1[v] + H2[v] + H3[v] + hk_before(blk, p, v, wide) + 1;
          LA[L] = ++hrel[v];
          LV[L] = (uint16_t)v;
          L++;
        }
      } else {
        while (m) {
          int p = __builtin_ctzll(m);
          m &= m - 1;
          hrel[wide ? d16[p] : d8[p]]++;
        }
      }
      if (n == BLK) {
        if (wide) {
          for (int t = 0; t < BLK; t += 4) {
            uint64_t w8;
            memcpy(&w8, d16 + t, 8);
            H0[w8 & 0xFFFF]++; H1[(w8 >> 16) & 0xFFFF]++;
            H2[(w8 >> 32) & 0xFFFF]++; H3[w8 >> 48]++;
          }
        } else {
          for (int t = 0; t < BLK; t += 8) {
            uint64_t w8;
            memcpy(&w8, d8 + t, 8);
            H0[w8 & 0xFF]++; H1[(w8 >> 8) & 0xFF]++; H2[(w8 >> 16) & 0xFF]++; H3[(w8 >> 24) & 0xFF]++;
            H0[(w8 >> 32) & 0xFF]++; H1[(w8 >> 40) & 0xFF]++; H2[(w8 >> 48) & 0xFF]++; H3[w8 >> 56]++;
          }
        }
      } else {
        for (int t = 0; t < n; t++) H0[wide ? d16[t] : d8[t]]++;
      }
    }
    int64_t na = 0, nr = 0;
    for (int64_t v = 0; v < nb; v++) {
      int64_t h = (int64_t)H0[v] + H1[v] + H2[v] + H3[v];
      Nlt[v] = na; Rlt[v] = nr;
      na += h; nr += hrel[v];
      if (hist_all) hist_all[i * nb + v] = h;
      if (hist_rel) hist_rel[i * nb + v] = hrel[v];
    }
    n_rel[i] = nr;
    /* SR[R] = rank (1-based) of the (R+1)-th relevant item in the ranking: increasing in R */
    if (need_list) hk_scatter_ranks(LV, LA, LB, L, Nlt, Rlt, SR);
    if (two_pass) L = hk_top_ranks(dbuf, wide, relm, nd, nb, kmax, Nlt, Rlt, hrel, cnt, SR);
    if (k > 0) {
      int64_t found = hk_count_le(SR, L, k);
      double s = hk_prec_sum(SR, found);
      ap[i] = found ? s / (double)found : 0.0;
    }
    for (int c = 0; c < nn; c++) hits[i * nn + c] = hk_count_le(SR, L, ns[c]);
  }
  free(dbuf); free(relm); free(H); free(hrel); free(Nlt); free(Rlt); free(tab);
  free(LV); free(LA); free(LB); free(SR); free(cnt);
  return ok ? 0 : -1;
}

/* Statistics of query rows lo..hi-1 (see hashkit/fastkernels.py). Returns 0, or -1 when out of
   memory. q: (nq, W) words; db: (nd, W) words. Relevance, one of: dlab (nd) and qlab (nq) label
   bit words (classes <= 64; relevant when they share a bit), or pid8 (U <= 256) / pid32 label-
   pattern id per database item with relq: (hi-lo, U) 0/1, row r for query lo + r; the rest NULL.
   k: AP cut-off (0: no AP); ns[nn]: P@N cut-offs; outputs are full (nq, ...) arrays, nullable
   except n_rel. */
int hk_eval_rows(const uint64_t *q, const uint64_t *db, int32_t W, int64_t nd, int32_t bits,
                 const uint8_t *pid8, const int32_t *pid32, const uint8_t *relq, int64_t U,
                 const uint64_t *dlab, const uint64_t *qlab, int64_t lo, int64_t hi, int64_t k,
                 const int64_t *ns, int32_t nn, double *ap, int64_t *hits, int64_t *hist_all,
                 int64_t *hist_rel, int64_t *n_rel) {
  if (bits <= 255)
    return hk_rows(q, db, W, nd, bits, pid8, pid32, relq, U, dlab, qlab, lo, hi, k, ns, nn, ap, hits,
                   hist_all, hist_rel, n_rel, 0);
  return hk_rows(q, db, W, nd, bits, pid8, pid32, relq, U, dlab, qlab, lo, hi, k, ns, nn, ap, hits,
                 hist_all, hist_rel, n_rel, 1);
}

int hk_abi_version(void) { return 2; }
"""

_lock = threading.Lock()
_state: dict[str, object] = {}  # "lib": the loaded CDLL or None after a failed attempt


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


# compiler flags tried in order; -march=native is safe because the cache key includes the CPU
FLAG_SETS: tuple[tuple[str, ...], ...] = (("-O3", "-march=native"), ("-O3",))


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
        if lib.hk_abi_version() != 2:
            continue
        fn = lib.hk_eval_rows
        p = ctypes.c_void_p
        i64, i32 = ctypes.c_int64, ctypes.c_int32
        fn.argtypes = [p, p, i32, i64, i32, p, p, p, i64, p, p, i64, i64, i64, p, i32, p, p, p, p, p]
        fn.restype = ctypes.c_int
        logger.debug(f"hashkit kernels: loaded {target} ({' '.join(flags)})")
        return lib
    logger.debug("hashkit kernels: compilation failed; using the numpy path")
    return None


def load() -> ctypes.CDLL | None:
    """The compiled kernel library (built and cached on first use), or None to use the numpy path."""
    if disabled():
        return None
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                _state["lib"] = _build()
    return _state["lib"]  # type: ignore[return-value]
