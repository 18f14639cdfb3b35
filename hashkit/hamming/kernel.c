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

#ifdef HK_AVX2
/* AVX2 without AVX-512 (e.g. AMD Zen 1-3, Intel Haswell..Alder Lake): popcounts by nibble lookup
   (vpshufb) and byte sums (vpsadbw), relevance by byte-table lookup, compares by movemask. */

/* per 64-bit lane: popcount of x */
static inline __m256i hk_popcnt4(__m256i x) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i nib = _mm256_set1_epi8(0x0F);
  __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(x, nib));
  __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), nib));
  return _mm256_sad_epu8(_mm256_add_epi8(lo, hi), _mm256_setzero_si256());
}

/* Distances of 4 consecutive items (64-bit lanes, item order) from W = 1 or 2 words per item. */
static inline __m256i hk_dist4(const uint64_t *x, int W, __m256i q1, __m256i q2) {
  if (W == 1) return hk_popcnt4(_mm256_xor_si256(q1, _mm256_loadu_si256((const __m256i *)x)));
  /* two words per item: lanes [i.w0, i.w1, j.w0, j.w1]; sum the pairs, then restore item order */
  __m256i a = hk_popcnt4(_mm256_xor_si256(q2, _mm256_loadu_si256((const __m256i *)x)));
  __m256i b = hk_popcnt4(_mm256_xor_si256(q2, _mm256_loadu_si256((const __m256i *)(x + 4))));
  __m256i s = _mm256_add_epi64(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
  return _mm256_permute4x64_epi64(s, 0xD8); /* [0, 2, 1, 3] -> [0, 1, 2, 3] */
}

/* 16 distances (4 x 4 lanes, items in order, each < 2^16) -> 16 uint16 in item order */
static inline __m256i hk_pack16(__m256i s0, __m256i s1, __m256i s2, __m256i s3) {
  __m256i x = _mm256_or_si256(s0, _mm256_slli_epi64(s1, 32)); /* u32: a0 b0 a1 b1 | a2 b2 a3 b3 */
  __m256i y = _mm256_or_si256(s2, _mm256_slli_epi64(s3, 32)); /* u32: c0 d0 c1 d1 | c2 d2 c3 d3 */
  __m256i u = _mm256_packus_epi32(x, y);          /* u16: a0 b0 a1 b1 c0 d0 c1 d1 | a2 b2 a3 b3 c2 .. */
  u = _mm256_permute4x64_epi64(u, 0xD8);          /* u16: a0 b0 a1 b1 a2 b2 a3 b3 | c0 d0 .. c3 d3 */
  const __m256i order = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                         0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
  return _mm256_shuffle_epi8(u, order);           /* a0 a1 a2 a3 b0 .. b3 | c0 .. c3 d0 .. d3 */
}

/* bit t set when byte t of the 64 bytes at p equals v */
static inline uint64_t hk_eq_mask8(const uint8_t *p, uint32_t v) {
  __m256i vv = _mm256_set1_epi8((char)v);
  uint32_t lo = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)p), vv));
  uint32_t hi = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(p + 32)), vv));
  return (uint64_t)lo | ((uint64_t)hi << 32);
}

/* 32 bits from 32 uint16 compares (a, b: 16 lanes each, 0xFFFF or 0) */
static inline uint32_t hk_movemask16(__m256i a, __m256i b) {
  __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi16(a, b), 0xD8);
  return (uint32_t)_mm256_movemask_epi8(p);
}

/* bit t set when uint16 t of the 64 at p equals v */
static inline uint64_t hk_eq_mask16(const uint16_t *p, uint32_t v) {
  __m256i vv = _mm256_set1_epi16((short)v);
  uint64_t m = 0;
  for (int h = 0; h < 2; h++) {
    __m256i a = _mm256_cmpeq_epi16(_mm256_loadu_si256((const __m256i *)(p + 32 * h)), vv);
    __m256i b = _mm256_cmpeq_epi16(_mm256_loadu_si256((const __m256i *)(p + 32 * h + 16)), vv);
    m |= (uint64_t)hk_movemask16(a, b) << (32 * h);
  }
  return m;
}

/* bit t set when byte t of the 64 at p is <= c */
static inline uint64_t hk_le_mask8(const uint8_t *p, uint32_t c) {
  __m256i cv = _mm256_set1_epi8((char)c);
  __m256i a = _mm256_loadu_si256((const __m256i *)p), b = _mm256_loadu_si256((const __m256i *)(p + 32));
  uint32_t lo = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_min_epu8(a, cv), a));
  uint32_t hi = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_min_epu8(b, cv), b));
  return (uint64_t)lo | ((uint64_t)hi << 32);
}

/* bit t set when uint16 t of the 64 at p is <= c */
static inline uint64_t hk_le_mask16(const uint16_t *p, uint32_t c) {
  __m256i cv = _mm256_set1_epi16((short)c);
  uint64_t m = 0;
  for (int h = 0; h < 2; h++) {
    __m256i x = _mm256_loadu_si256((const __m256i *)(p + 32 * h));
    __m256i y = _mm256_loadu_si256((const __m256i *)(p + 32 * h + 16));
    __m256i a = _mm256_cmpeq_epi16(_mm256_min_epu16(x, cv), x);
    __m256i b = _mm256_cmpeq_epi16(_mm256_min_epu16(y, cv), y);
    m |= (uint64_t)hk_movemask16(a, b) << (32 * h);
  }
  return m;
}
#endif

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
#ifdef HK_AVX2
  const __m256i q1 = _mm256_set1_epi64x((long long)qw[0]);
  const long long a0 = (long long)qw[0], a1 = W >= 2 ? (long long)qw[1] : 0;
  const __m256i q2 = _mm256_setr_epi64x(a0, a1, a0, a1);
  const __m256i qlv = _mm256_set1_epi64x((long long)qlab);
  /* relevance of a label-pattern id: the byte table itself when U <= 16 (one vpshufb), else a
     256-bit set (byte id >> 3 by two vpshufb, bit id & 7 by a third) */
  uint8_t bits8[32] = {0};
  if (pid8)
    for (int64_t u = 0; u < U; u++) bits8[u >> 3] |= (uint8_t)((tab[u] != 0) << (u & 7));
  const __m256i tab16 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tab));
  const __m256i set_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)bits8));
  const __m256i set_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(bits8 + 16)));
  const __m256i bit_of = _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128,
                                          1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
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
#ifdef HK_AVX2
    if (W <= 2 && n == BLK) {
      const uint64_t *x = db + (int64_t)W * base;
      for (int g = 0; g < BLK / 16; g++, x += 16 * W) {
        __m256i v = hk_pack16(hk_dist4(x, W, q1, q2), hk_dist4(x + 4 * W, W, q1, q2),
                              hk_dist4(x + 8 * W, W, q1, q2), hk_dist4(x + 12 * W, W, q1, q2));
        if (wide) _mm256_storeu_si256((__m256i *)(d16 + base + 16 * g), v);
        else _mm_storeu_si128((__m128i *)(d8 + base + 16 * g),
                              _mm_packus_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
      }
      done = 1;
    }
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
#ifdef HK_AVX2
      if (n == BLK) {
        for (int g = 0; g < BLK / 4; g++) {
          __m256i z = _mm256_cmpeq_epi64(
              _mm256_and_si256(qlv, _mm256_loadu_si256((const __m256i *)(dlab + base + 4 * g))),
              _mm256_setzero_si256());
          m |= (uint64_t)(~_mm256_movemask_pd(_mm256_castsi256_pd(z)) & 0xF) << (4 * g);
        }
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
#ifdef HK_AVX2
      if (n == BLK) {
        for (int g = 0; g < 2; g++) {
          __m256i pv = _mm256_loadu_si256((const __m256i *)(pid8 + base + 32 * g)), r;
          if (U <= 16) {
            r = _mm256_shuffle_epi8(tab16, pv);
          } else {
            __m256i at = _mm256_and_si256(_mm256_srli_epi16(pv, 3), _mm256_set1_epi8(0x1F));
            __m256i byte = _mm256_blendv_epi8(_mm256_shuffle_epi8(set_lo, at), _mm256_shuffle_epi8(set_hi, at),
                                              _mm256_slli_epi16(at, 3)); /* bit 4 of at -> bit 7 */
            __m256i bit = _mm256_shuffle_epi8(bit_of, _mm256_and_si256(pv, _mm256_set1_epi8(7)));
            r = _mm256_cmpeq_epi8(_mm256_and_si256(byte, bit), bit);
          }
          m |= (uint64_t)(uint32_t)_mm256_movemask_epi8(r) << (32 * g);
        }
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
#elif defined(HK_AVX2)
  uint64_t low = (p == 0) ? 0 : (~0ULL >> (64 - p));
  uint64_t eq = wide ? hk_eq_mask16((const uint16_t *)blk, v) : hk_eq_mask8((const uint8_t *)blk, v);
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

/* bit t set when item t < n of the block has distance <= c */
static inline uint64_t hk_block_le(const uint8_t *d8, const uint16_t *d16, int n, int wide, uint32_t c) {
  uint64_t sel = 0;
#ifdef HK_AVX512
  if (wide) {
    __m512i cv = _mm512_set1_epi16((short)c);
    sel = (uint64_t)_mm512_cmple_epu16_mask(_mm512_loadu_si512(d16), cv) |
          ((uint64_t)_mm512_cmple_epu16_mask(_mm512_loadu_si512(d16 + 32), cv) << 32);
  } else {
    sel = _mm512_cmple_epu8_mask(_mm512_loadu_si512(d8), _mm512_set1_epi8((char)c));
  }
#elif defined(HK_AVX2)
  sel = wide ? hk_le_mask16(d16, c) : hk_le_mask8(d8, c);
#else
  for (int t = 0; t < n; t++) sel |= (uint64_t)((wide ? d16[t] : d8[t]) <= c) << t;
#endif
  if (n < BLK) sel &= (1ULL << n) - 1; /* the buffer is padded: vector compares read past n */
  return sel;
}

/* the distance bucket holding rank kmax: Nlt[vc] < kmax <= Nlt[vc + 1] (or the last bucket) */
static inline int64_t hk_rank_bucket(const int64_t *Nlt, int64_t nb, int64_t kmax) {
  int64_t vc = 0;
  while (vc + 1 < nb && Nlt[vc + 1] < kmax) vc++;
  return vc;
}

/* Second pass for small k: SR for the relevant items up to the bucket vc holding rank kmax, visiting
   only the items with distance <= vc in index order (counts per bucket give their ranks). Returns
   the number of SR entries (relevant items with distance <= vc). */
static int64_t hk_top_ranks(const void *dbuf, int wide, const uint64_t *relm, int64_t nd, int64_t nb,
                            int64_t vc, const int64_t *Nlt, const int64_t *Rlt,
                            const uint32_t *hrel, uint32_t *cnt, uint32_t *SR) {
  uint32_t *crel = cnt + nb;
  memset(cnt, 0, (size_t)2 * nb * sizeof(uint32_t));
  int64_t nblk = (nd + BLK - 1) / BLK;
  for (int64_t b = 0; b < nblk; b++) {
    int64_t base = b * BLK;
    int n = (int)(nd - base < BLK ? nd - base : BLK);
    const uint8_t *d8 = (const uint8_t *)dbuf + base;
    const uint16_t *d16 = (const uint16_t *)dbuf + base;
    uint64_t sel = hk_block_le(d8, d16, n, wide, (uint32_t)vc), rel = relm[b];
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

/* Candidates for small k: the positions (ascending) of the items with distance <= cut, their
   histogram H and that of the relevant ones, hrel (both zeroed by the caller). Returns how many;
   *nrel = relevant items in the whole database. */
static int64_t hk_candidates(const void *dbuf, int wide, const uint64_t *relm, int64_t nd, uint32_t cut,
                             uint32_t *cand, uint32_t *H, uint32_t *hrel, int64_t *nrel) {
  int64_t nblk = (nd + BLK - 1) / BLK, L = 0, nr = 0;
  for (int64_t b = 0; b < nblk; b++) {
    int64_t base = b * BLK;
    int n = (int)(nd - base < BLK ? nd - base : BLK);
    const uint8_t *d8 = (const uint8_t *)dbuf + base;
    const uint16_t *d16 = (const uint16_t *)dbuf + base;
    uint64_t sel = hk_block_le(d8, d16, n, wide, cut), rel = relm[b];
    nr += __builtin_popcountll(rel);
    while (sel) {
      int p = __builtin_ctzll(sel);
      sel &= sel - 1;
      uint32_t v = wide ? d16[p] : d8[p];
      H[v]++;
      hrel[v] += (uint32_t)((rel >> p) & 1);
      cand[L++] = (uint32_t)(base + p);
    }
  }
  *nrel = nr;
  return L;
}

/* hk_top_ranks over the candidate list (every item with distance <= vc is in it, in index order) */
static int64_t hk_candidate_ranks(const uint32_t *cand, int64_t nc, const void *dbuf, int wide,
                                  const uint64_t *relm, int64_t nb, int64_t vc, const int64_t *Nlt,
                                  const int64_t *Rlt, const uint32_t *hrel, uint32_t *cnt, uint32_t *SR) {
  uint32_t *crel = cnt + nb;
  memset(cnt, 0, (size_t)2 * nb * sizeof(uint32_t));
  const uint8_t *d8 = (const uint8_t *)dbuf;
  const uint16_t *d16 = (const uint16_t *)dbuf;
  for (int64_t t = 0; t < nc; t++) {
    uint32_t j = cand[t], v = wide ? d16[j] : d8[j];
    if (v > (uint32_t)vc) continue;
    uint32_t c = ++cnt[v];
    if ((relm[j / BLK] >> (j % BLK)) & 1) SR[Rlt[v] + crel[v]++] = (uint32_t)(Nlt[v] + c);
  }
  return Rlt[vc] + hrel[vc];
}

/* number of entries <= x in the increasing array a[0..n) */
static inline int64_t hk_count_le(const uint32_t *a, int64_t n, int64_t x) {
  int64_t lo = 0, hi = n;
  while (lo < hi) { int64_t mid = lo + (hi - lo) / 2; if ((int64_t)a[mid] <= x) lo = mid + 1; else hi = mid; }
  return lo;
}

/* Sum over R in [lo, lo + n) of (R + 1) / sr[R] (the precisions at the relevant positions) in
   exactly numpy's pairwise order (pairwise_sum of numpy's add.reduce: below 8 terms one by one; up
   to 128 terms 8 running sums r[j] over the terms j, j + 8, ..., combined as
   ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the rest one by one; above, the two halves
   split at a multiple of 8). Every kernel path and the numpy path then give bit-for-bit the same AP:
   divisions are correctly rounded and each lane adds the same terms in the same order. */
static double hk_prec_sum_at(const uint32_t *sr, int64_t lo, int64_t n) {
  if (n < 8) {
    double res = 0.;
    for (int64_t i = 0; i < n; i++) res += (double)(lo + i + 1) / (double)sr[lo + i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    int64_t i, end = n - n % 8;
    const uint32_t *x = sr + lo;
#ifdef HK_AVX512
    __m512d num = _mm512_add_pd(_mm512_set1_pd((double)(lo + 1)), _mm512_setr_pd(0, 1, 2, 3, 4, 5, 6, 7));
    const __m512d step = _mm512_set1_pd(8.0);
    __m512d acc = _mm512_div_pd(num, _mm512_cvtepu32_pd(_mm256_loadu_si256((const __m256i *)x)));
    for (i = 8; i < end; i += 8) {
      num = _mm512_add_pd(num, step);
      acc = _mm512_add_pd(acc, _mm512_div_pd(num, _mm512_cvtepu32_pd(_mm256_loadu_si256((const __m256i *)(x + i)))));
    }
    _mm512_storeu_pd(r, acc);
#elif defined(HK_AVX2) /* ranks < 2^31: the signed conversion is exact */
    __m256d n0 = _mm256_add_pd(_mm256_set1_pd((double)(lo + 1)), _mm256_setr_pd(0, 1, 2, 3));
    __m256d n1 = _mm256_add_pd(n0, _mm256_set1_pd(4.0));
    const __m256d step = _mm256_set1_pd(8.0);
    __m256d a0 = _mm256_div_pd(n0, _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)x)));
    __m256d a1 = _mm256_div_pd(n1, _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(x + 4))));
    for (i = 8; i < end; i += 8) {
      n0 = _mm256_add_pd(n0, step);
      n1 = _mm256_add_pd(n1, step);
      a0 = _mm256_add_pd(a0, _mm256_div_pd(n0, _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(x + i)))));
      a1 = _mm256_add_pd(a1, _mm256_div_pd(n1, _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(x + i + 4)))));
    }
    _mm256_storeu_pd(r, a0);
    _mm256_storeu_pd(r + 4, a1);
#else
    for (int j = 0; j < 8; j++) r[j] = (double)(lo + j + 1) / (double)x[j];
    for (i = 8; i < end; i += 8)
      for (int j = 0; j < 8; j++) r[j] += (double)(lo + i + j + 1) / (double)x[i + j];
#endif
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (i = end; i < n; i++) res += (double)(lo + i + 1) / (double)x[i];
    return res;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return hk_prec_sum_at(sr, lo, n2) + hk_prec_sum_at(sr, lo + n2, n - n2);
}

static double hk_prec_sum(const uint32_t *sr, int64_t n) { return hk_prec_sum_at(sr, 0, n); }

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
  /* Small k without histogram outputs: only the items closer than a cut need counting. The cut is
     the previous query's rank-kmax bucket plus a margin; a query whose items under the cut are fewer
     than kmax is redone with the full histogram (and the margin grows), so results never depend on
     the guess. This takes the histogram, which costs as much as the distances, off the hot path. */
  int few_ranks = two_pass && !hist_all && !hist_rel;
  int64_t prev_vc = -1, margin = 2;
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
  uint32_t *cand = few_ranks ? (uint32_t *)malloc((size_t)nd * sizeof(uint32_t)) : NULL;
  int ok = dbuf && relm && H && hrel && Nlt && Rlt && tab && (!need_list || (LV && LA && LB)) &&
           (kmax == 0 || SR) && (!two_pass || cnt) && (!few_ranks || cand);
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
    int64_t L = 0, nc = 0, nr = 0;
    int cut_ok = 0;
    if (few_ranks && prev_vc >= 0 && prev_vc + margin < nb - 1) {
      nc = hk_candidates(dbuf, wide, relm, nd, (uint32_t)(prev_vc + margin), cand, H0, hrel, &nr);
      cut_ok = nc >= kmax;
      if (!cut_ok) {
        memset(H, 0, (size_t)nb * sizeof(uint32_t));
        memset(hrel, 0, (size_t)nb * sizeof(uint32_t));
        if (margin < 16) margin++;
      }
    }
    for (int64_t b = 0; b < nblk && !cut_ok; b++) {
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
    /* with a cut, H and hrel count only the items under it: Nlt and Rlt are right up to the cut,
       which lies beyond the bucket of rank kmax */
    int64_t na = 0, nrh = 0;
    for (int64_t v = 0; v < nb; v++) {
      int64_t h = (int64_t)H0[v] + H1[v] + H2[v] + H3[v];
      Nlt[v] = na; Rlt[v] = nrh;
      na += h; nrh += hrel[v];
      if (hist_all) hist_all[i * nb + v] = h;
      if (hist_rel) hist_rel[i * nb + v] = hrel[v];
    }
    n_rel[i] = cut_ok ? nr : nrh;
    /* SR[R] = rank (1-based) of the (R+1)-th relevant item in the ranking: increasing in R */
    if (need_list) hk_scatter_ranks(LV, LA, LB, L, Nlt, Rlt, SR);
    if (two_pass) {
      int64_t vc = hk_rank_bucket(Nlt, nb, kmax);
      L = cut_ok ? hk_candidate_ranks(cand, nc, dbuf, wide, relm, nb, vc, Nlt, Rlt, hrel, cnt, SR)
                 : hk_top_ranks(dbuf, wide, relm, nd, nb, vc, Nlt, Rlt, hrel, cnt, SR);
      prev_vc = vc;
    }
    if (k > 0) {
      int64_t found = hk_count_le(SR, L, k);
      double s = hk_prec_sum(SR, found);
      ap[i] = found ? s / (double)found : 0.0;
    }
    for (int c = 0; c < nn; c++) hits[i * nn + c] = hk_count_le(SR, L, ns[c]);
  }
  free(dbuf); free(relm); free(H); free(hrel); free(Nlt); free(Rlt); free(tab);
  free(LV); free(LA); free(LB); free(SR); free(cnt); free(cand);
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

/* Distances of qc queries to n codes for the native search engine (hashkit/index/native.py), in the
   column layout of hashkit.hamming.word_columns: word w of code t at cols[w * stride + t], word w of
   query r at q[w * qc + r]. out (qc, n), row-major: uint8 when wide == 0, else uint16. */
void hk_tile_distances(const uint64_t *q, int64_t qc, const uint64_t *cols, int64_t stride, int32_t W,
                       int64_t n, void *out, int32_t wide) {
  uint8_t *o8 = (uint8_t *)out;
  uint16_t *o16 = (uint16_t *)out;
  for (int64_t r = 0; r < qc; r++) {
    int64_t t = 0;
#if defined(HK_AVX512) && defined(__AVX512VPOPCNTDQ__)
    for (; t + 8 <= n; t += 8) {
      __m512i acc = _mm512_setzero_si512();
      for (int w = 0; w < W; w++)
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(
                  _mm512_set1_epi64((long long)q[w * qc + r]), _mm512_loadu_si512(cols + w * stride + t))));
      if (wide) _mm_storeu_si128((__m128i *)(o16 + r * n + t), _mm512_cvtepi64_epi16(acc));
      else _mm_storel_epi64((__m128i *)(o8 + r * n + t), _mm512_cvtepi64_epi8(acc));
    }
#elif defined(HK_AVX2)
    for (; t + 16 <= n; t += 16) { /* four named accumulators: an array would live on the stack */
      __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
      for (int w = 0; w < W; w++) {
        const __m256i *c = (const __m256i *)(cols + w * stride + t);
        const __m256i qv = _mm256_set1_epi64x((long long)q[w * qc + r]);
        s0 = _mm256_add_epi64(s0, hk_popcnt4(_mm256_xor_si256(qv, _mm256_loadu_si256(c))));
        s1 = _mm256_add_epi64(s1, hk_popcnt4(_mm256_xor_si256(qv, _mm256_loadu_si256(c + 1))));
        s2 = _mm256_add_epi64(s2, hk_popcnt4(_mm256_xor_si256(qv, _mm256_loadu_si256(c + 2))));
        s3 = _mm256_add_epi64(s3, hk_popcnt4(_mm256_xor_si256(qv, _mm256_loadu_si256(c + 3))));
      }
      __m256i v = hk_pack16(s0, s1, s2, s3);
      if (wide) _mm256_storeu_si256((__m256i *)(o16 + r * n + t), v);
      else _mm_storeu_si128((__m128i *)(o8 + r * n + t),
                            _mm_packus_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
    }
#endif
    for (; t < n; t++) {
      uint32_t d = 0;
      for (int w = 0; w < W; w++) d += (uint32_t)__builtin_popcountll(q[w * qc + r] ^ cols[w * stride + t]);
      if (wide) o16[r * n + t] = (uint16_t)d; else o8[r * n + t] = (uint8_t)d;
    }
  }
}

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
