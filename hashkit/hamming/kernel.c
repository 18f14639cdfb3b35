/* hashkit compiled Hamming kernels, loaded with ctypes by hashkit/hamming/kernel.py (which documents
   what each function computes, how the library is built and cached, and the fallback without a
   compiler). Shipped as package data; compiled on first use with the system compiler. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define HK_AVX512 1
#elif defined(__AVX2__) && defined(__POPCNT__)
#include <immintrin.h>
#define HK_AVX2 1
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

/* Statistics of query rows lo..hi-1 (see hashkit/hamming/kernel.py). Returns 0, or -1 when out of
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

int hk_abi_version(void) { return 3; }

/* ---------------------------------------------------------------------------------------------
   Multi-index hashing (Norouzi, Punjani, Fleet, TPAMI 2014): exact k-NN and radius search over n
   codes with m hash tables, one per disjoint substring (hashkit/hamming/mih.py builds the layout).
   Table j: off_j (2^s_j + 1 uint32 bucket starts) and perm_j (n uint32 positions, ascending within
   a bucket), both inside one uint32 buffer `tab` at element offsets off_at[j] / perm_at[j].
   A code x is first met at radius r* = min_j d_j(x) in table j* = min{j : d_j(x) = r*} (tables are
   searched radius by radius, table by table), so a candidate met at (r, j) is new iff every
   d_j'(x) >= r and d_j'(x) > r for j' < j: no visited set is needed. After table j at radius r
   every code with distance <= m*r + j has been met (pigeonhole: an unmet code has d_j' >= r + 1 for
   j' <= j and >= r for the others). */

/* next bit pattern with the same popcount (Gosper's hack); caller stops at >= 2^s */
static inline uint64_t hk_next_comb(uint64_t v) {
  uint64_t t = v | (v - 1);
  return (t + 1) | (((~t & -~t) - 1) >> (__builtin_ctzll(v) + 1));
}

static inline uint64_t hk_binom(int s, int r) {
  if (r < 0 || r > s) return 0;
  uint64_t c = 1;
  for (int i = 1; i <= r; i++) c = c * (uint64_t)(s - r + i) / (uint64_t)i;
  return c;
}

/* 0 when the code at position p was already met before (r, j), else 1; *d = its distance */
static inline int hk_mih_new(const uint64_t *qw, const uint64_t *db, int W, int64_t p, int m,
                             const uint64_t *smask, int r, int j, uint32_t *d) {
  uint64_t z[8];
  const uint64_t *x = db + p * W;
  uint32_t tot = 0;
  int Wz = W <= 8 ? W : 8;
  for (int w = 0; w < Wz; w++) { z[w] = qw[w] ^ x[w]; tot += (uint32_t)__builtin_popcountll(z[w]); }
  for (int w = 8; w < W; w++) tot += (uint32_t)__builtin_popcountll(qw[w] ^ x[w]);
  for (int jj = 0; jj < m; jj++) {
    if (jj == j) continue;
    const uint64_t *mk = smask + (int64_t)jj * W;
    uint32_t dj = 0;
    for (int w = 0; w < W; w++) {
      uint64_t zz = w < 8 ? z[w] : (qw[w] ^ x[w]);
      dj += (uint32_t)__builtin_popcountll(zz & mk[w]);
    }
    if ((int)dj < r || (jj < j && (int)dj == r)) return 0;
  }
  *d = tot;
  return 1;
}

/* insert (d, p) into the sorted top list (bd, bi) of size *cnt <= k, ordered by (d, p) */
static inline void hk_top_insert(uint32_t *bd, int64_t *bi, int64_t *cnt, int64_t k, uint32_t d, int64_t p) {
  int64_t c = *cnt;
  if (c == k && (d > bd[k - 1] || (d == bd[k - 1] && p > bi[k - 1]))) return;
  int64_t t = c < k ? c : k - 1;
  while (t > 0 && (bd[t - 1] > d || (bd[t - 1] == d && bi[t - 1] > p))) {
    bd[t] = bd[t - 1]; bi[t] = bi[t - 1]; t--;
  }
  bd[t] = d; bi[t] = p;
  if (c < k) *cnt = c + 1;
}

static inline uint32_t hk_full_dist(const uint64_t *qw, const uint64_t *db, int W, int64_t p) {
  uint32_t s = 0;
  for (int w = 0; w < W; w++) s += (uint32_t)__builtin_popcountll(qw[w] ^ db[p * W + w]);
  return s;
}

/* Exact top-k (k <= n) of query rows lo..hi-1, sorted by (distance, position). A query whose next
   radius would enumerate more than n / 8 keys in total is answered by a linear scan instead (far
   queries: hashing cannot prune them). visited[i]: codes whose distance was computed. 0 or -1 (oom). */
int hk_mih_knn(const uint64_t *db, int32_t W, int64_t n, int32_t m, const int32_t *sw,
               const uint64_t *smask, const uint32_t *tab, const int64_t *off_at, const int64_t *perm_at,
               const uint64_t *q, const uint32_t *qkeys, int64_t lo, int64_t hi, int64_t k,
               int32_t *outd, int64_t *outi, int64_t *visited) {
  uint32_t *bd = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)(k > 0 ? k : 1));
  int64_t *bi = (int64_t *)malloc(sizeof(int64_t) * (size_t)(k > 0 ? k : 1));
  if (!bd || !bi) { free(bd); free(bi); return -1; }
  int maxs = 0;
  for (int j = 0; j < m; j++) if (sw[j] > maxs) maxs = sw[j];
  for (int64_t i = lo; i < hi; i++) {
    const uint64_t *qw = q + i * W;
    int64_t cnt = 0, seen = 0;
    uint64_t keys = 0;
    int done = 0;
    for (int r = 0; r <= maxs && !done; r++) {
      uint64_t nk = 0;
      for (int j = 0; j < m; j++) nk += hk_binom(sw[j], r);
      keys += nk;
      if (keys > (uint64_t)(n / 8 + 64)) { /* linear scan */
        cnt = 0;
        for (int64_t p = 0; p < n; p++) hk_top_insert(bd, bi, &cnt, k, hk_full_dist(qw, db, W, p), p);
        seen = n;
        break;
      }
      for (int j = 0; j < m && !done; j++) {
        int s = sw[j];
        if (r <= s) {
          const uint32_t *off = tab + off_at[j], *perm = tab + perm_at[j];
          uint64_t qk = qkeys[i * m + j];
          uint64_t lim = s >= 64 ? ~0ULL : (1ULL << s);
          uint64_t mask = r == 0 ? 0 : ((r >= 64) ? ~0ULL : ((1ULL << r) - 1));
          for (;;) {
            uint64_t key = qk ^ mask;
            for (uint32_t t = off[key], e = off[key + 1]; t < e; t++) {
              uint32_t d;
              int64_t p = perm[t];
              if (t + 8 < e) __builtin_prefetch(db + (int64_t)perm[t + 8] * W); /* random reads: hide latency */
              if (hk_mih_new(qw, db, W, p, m, smask, r, j, &d)) {
                seen++;
                hk_top_insert(bd, bi, &cnt, k, d, p);
              }
            }
            if (r == 0) break;
            mask = hk_next_comb(mask);
            if (mask >= lim) break;
          }
        }
        if (cnt == k && (int64_t)bd[k - 1] <= (int64_t)m * r + j) done = 1;
      }
    }
    for (int64_t t = 0; t < k; t++) {
      outd[i * k + t] = t < cnt ? (int32_t)bd[t] : -1;
      outi[i * k + t] = t < cnt ? bi[t] : -1;
    }
    if (visited) visited[i] = seen;
  }
  free(bd); free(bi);
  return 0;
}

/* Every code within `radius` of query rows lo..hi-1 into (orow, opos, odist), unordered, at most
   cap entries. Returns the first row not written (hi when all fit; rows are never split); *used =
   entries written. Linear scan for a query whose search would enumerate more than n / 8 keys. */
int64_t hk_mih_range(const uint64_t *db, int32_t W, int64_t n, int32_t m, const int32_t *sw,
                     const uint64_t *smask, const uint32_t *tab, const int64_t *off_at,
                     const int64_t *perm_at, const uint64_t *q, const uint32_t *qkeys, int64_t lo,
                     int64_t hi, int32_t radius, int64_t cap, int64_t *orow, int64_t *opos,
                     int32_t *odist, int64_t *used) {
  int64_t u = 0;
  int maxs = 0;
  for (int j = 0; j < m; j++) if (sw[j] > maxs) maxs = sw[j];
  /* the search stops after the (r, j) with m*r + j >= radius: count the keys it enumerates */
  uint64_t keys = 0;
  for (int r = 0, stop = 0; r <= maxs && !stop; r++)
    for (int j = 0; j < m && !stop; j++) {
      keys += hk_binom(sw[j], r);
      stop = (int64_t)m * r + j >= radius;
    }
  int linear = keys > (uint64_t)(n / 8 + 64);
  for (int64_t i = lo; i < hi; i++) {
    const uint64_t *qw = q + i * W;
    int64_t start = u;
    int full = 0;
    if (linear) {
      for (int64_t p = 0; p < n && !full; p++) {
        uint32_t d = hk_full_dist(qw, db, W, p);
        if ((int32_t)d <= radius) {
          if (u >= cap) { full = 1; break; }
          orow[u] = i; opos[u] = p; odist[u] = (int32_t)d; u++;
        }
      }
    } else {
      int stop = 0;
      for (int r = 0; r <= maxs && !stop && !full; r++) {
        for (int j = 0; j < m && !stop && !full; j++) {
          int s = sw[j];
          if (r <= s) {
            const uint32_t *off = tab + off_at[j], *perm = tab + perm_at[j];
            uint64_t qk = qkeys[i * m + j];
            uint64_t lim = s >= 64 ? ~0ULL : (1ULL << s);
            uint64_t mask = r == 0 ? 0 : ((1ULL << r) - 1);
            for (;;) {
              uint64_t key = qk ^ mask;
              for (uint32_t t = off[key], e = off[key + 1]; t < e; t++) {
                uint32_t d;
                int64_t p = perm[t];
                if (t + 8 < e) __builtin_prefetch(db + (int64_t)perm[t + 8] * W);
                if (hk_mih_new(qw, db, W, p, m, smask, r, j, &d) && (int32_t)d <= radius) {
                  if (u >= cap) { full = 1; break; }
                  orow[u] = i; opos[u] = p; odist[u] = (int32_t)d; u++;
                }
              }
              if (full || r == 0) break;
              mask = hk_next_comb(mask);
              if (mask >= lim) break;
            }
          }
          if ((int64_t)m * r + j >= radius) stop = 1;
        }
      }
    }
    if (full) { *used = start; return i; }
  }
  *used = u;
  return hi;
}

/* Counting sort of one table: key of each code (keys[n] < 2^s) -> off (2^s + 1) and perm (n),
   positions ascending within a bucket. counts: scratch of 2^s + 1 uint32, zeroed here. */
void hk_mih_build(const uint32_t *keys, int64_t n, int32_t s, uint32_t *off, uint32_t *perm) {
  uint64_t nb = 1ULL << s;
  memset(off, 0, sizeof(uint32_t) * (nb + 1));
  for (int64_t p = 0; p < n; p++) off[keys[p] + 1]++;
  for (uint64_t b = 0; b < nb; b++) off[b + 1] += off[b];
  /* scatter with a moving cursor per bucket: reuse off shifted by one, then shift back */
  for (int64_t p = 0; p < n; p++) perm[off[keys[p]]++] = (uint32_t)p;
  for (uint64_t b = nb; b > 0; b--) off[b] = off[b - 1];
  off[0] = 0;
}

/* Value of the substring [a, a + s) (code bit order: bit 0 = MSB of byte 0) of each of n codes given
   as native little-endian uint64 words (n, W): byte-swapping a word gives the code's bits MSB first. */
void hk_mih_keys(const uint64_t *db, int64_t n, int32_t W, int32_t a, int32_t s, uint32_t *keys) {
  int wi = a / 64, off = a % 64;
  uint64_t mask = s >= 64 ? ~0ULL : ((1ULL << s) - 1);
  if (off + s <= 64) {
    int sh = 64 - off - s;
    for (int64_t p = 0; p < n; p++) keys[p] = (uint32_t)((__builtin_bswap64(db[p * W + wi]) >> sh) & mask);
  } else {
    int low = off + s - 64;
    uint64_t himask = (1ULL << (64 - off)) - 1;
    for (int64_t p = 0; p < n; p++) {
      uint64_t hi = __builtin_bswap64(db[p * W + wi]) & himask;
      uint64_t lo = __builtin_bswap64(db[p * W + wi + 1]);
      keys[p] = (uint32_t)((hi << low) | (lo >> (64 - low)));
    }
  }
}

int hk_mih_abi_version(void) { return 2; }

/* which vector paths this build has (hashkit.hamming.kernel.paths) */
const char *hk_paths(void) {
#if defined(HK_AVX512) && defined(__AVX512VPOPCNTDQ__) && defined(__AVX512VBMI__)
  return "avx512-vpopcntdq+bw+vbmi";
#elif defined(HK_AVX512)
  return "avx512-bw";
#elif defined(HK_AVX2)
  return "avx2";
#elif defined(__POPCNT__)
  return "popcnt";
#else
  return "portable";
#endif
}
