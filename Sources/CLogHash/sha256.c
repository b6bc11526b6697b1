// SHA-256 (FIPS 180-4) for the event log's chain hash (see cloghash.h). One call hashes two buffers (the
// record's fixed fields, then its payload) with the state on the stack: no allocation. The block function
// uses the x86 SHA extensions when cpuid reports them (compiled for them with a target attribute, so the
// rest of the program keeps the baseline instruction set) and otherwise the portable rounds below.
#include "cloghash.h"

#include <string.h>

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void blocks_portable(uint32_t h[8], const uint8_t *p, size_t blocks) {
  while (blocks--) {
    uint32_t w[64];
    for (int t = 0; t < 16; t++) {
      w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 | (uint32_t)p[4 * t + 2] << 8 | p[4 * t + 3];
    }
    for (int t = 16; t < 64; t++) {
      uint32_t s0 = ROR(w[t - 15], 7) ^ ROR(w[t - 15], 18) ^ (w[t - 15] >> 3);
      uint32_t s1 = ROR(w[t - 2], 17) ^ ROR(w[t - 2], 19) ^ (w[t - 2] >> 10);
      w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; t++) {
      uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + w[t];
      uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
    p += 64;
  }
}

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

// Four rounds per step: W holds message words 4i..4i+3; after each step STATE0 = ABEF, STATE1 = CDGH.
__attribute__((target("sha,sse4.1,ssse3"))) static void blocks_shani(uint32_t h[8], const uint8_t *p, size_t blocks) {
  const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i tmp = _mm_loadu_si128((const __m128i *)&h[0]);
  __m128i state1 = _mm_loadu_si128((const __m128i *)&h[4]);
  tmp = _mm_shuffle_epi32(tmp, 0xB1);                // CDAB
  state1 = _mm_shuffle_epi32(state1, 0x1B);          // EFGH
  __m128i state0 = _mm_alignr_epi8(tmp, state1, 8);  // ABEF
  state1 = _mm_blend_epi16(state1, tmp, 0xF0);       // CDGH
  while (blocks--) {
    __m128i abef = state0, cdgh = state1;
    __m128i w[16];
    for (int i = 0; i < 16; i++) {
      if (i < 4) {
        w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), mask);
      } else {
        __m128i s = _mm_sha256msg1_epu32(w[i - 4], w[i - 3]);
        s = _mm_add_epi32(s, _mm_alignr_epi8(w[i - 1], w[i - 2], 4));
        w[i] = _mm_sha256msg2_epu32(s, w[i - 1]);
      }
      __m128i msg = _mm_add_epi32(w[i], _mm_loadu_si128((const __m128i *)&K[4 * i]));
      state1 = _mm_sha256rnds2_epu32(state1, state0, msg);
      msg = _mm_shuffle_epi32(msg, 0x0E);
      state0 = _mm_sha256rnds2_epu32(state0, state1, msg);
    }
    state0 = _mm_add_epi32(state0, abef);
    state1 = _mm_add_epi32(state1, cdgh);
    p += 64;
  }
  tmp = _mm_shuffle_epi32(state0, 0x1B);        // FEBA
  state1 = _mm_shuffle_epi32(state1, 0xB1);     // DCHG
  state0 = _mm_blend_epi16(tmp, state1, 0xF0);  // DCBA
  state1 = _mm_alignr_epi8(state1, tmp, 8);     // HGFE
  _mm_storeu_si128((__m128i *)&h[0], state0);
  _mm_storeu_si128((__m128i *)&h[4], state1);
}

int csha256_uses_sha_extensions(void) {
  static int cached = -1;
  int c = __atomic_load_n(&cached, __ATOMIC_RELAXED);
  if (c < 0) {
    unsigned int a = 0, b = 0, cx = 0, d = 0;
    int ok = __get_cpuid(1, &a, &b, &cx, &d) && (cx & bit_SSSE3) && (cx & bit_SSE4_1);
    ok = ok && __get_cpuid_count(7, 0, &a, &b, &cx, &d) && (b & bit_SHA);
    c = ok ? 1 : 0;
    __atomic_store_n(&cached, c, __ATOMIC_RELAXED);
  }
  return c;
}

static void blocks(uint32_t h[8], const uint8_t *p, size_t n) {
  if (csha256_uses_sha_extensions()) {
    blocks_shani(h, p, n);
  } else {
    blocks_portable(h, p, n);
  }
}
#else
int csha256_uses_sha_extensions(void) { return 0; }

static void blocks(uint32_t h[8], const uint8_t *p, size_t n) { blocks_portable(h, p, n); }
#endif

typedef struct {
  uint32_t h[8];
  uint8_t buf[64];
  size_t used;
  uint64_t total;
} sha_ctx;

static void update(sha_ctx *c, const uint8_t *p, size_t n) {
  c->total += n;
  if (c->used > 0) {
    size_t take = 64 - c->used < n ? 64 - c->used : n;
    memcpy(c->buf + c->used, p, take);
    c->used += take;
    p += take;
    n -= take;
    if (c->used < 64) return;
    blocks(c->h, c->buf, 1);
    c->used = 0;
  }
  if (n >= 64) {
    blocks(c->h, p, n / 64);
    p += n & ~(size_t)63;
    n &= 63;
  }
  if (n > 0) {
    memcpy(c->buf, p, n);
    c->used = n;
  }
}

void csha256(const void *a, size_t alen, const void *b, size_t blen, uint8_t out[32]) {
  sha_ctx c = {{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19},
               {0},
               0,
               0};
  if (alen > 0) update(&c, (const uint8_t *)a, alen);
  if (blen > 0) update(&c, (const uint8_t *)b, blen);
  uint64_t bits = c.total * 8;
  uint8_t pad[72];
  size_t padlen = (c.used < 56 ? 56 - c.used : 120 - c.used);
  memset(pad, 0, sizeof pad);
  pad[0] = 0x80;
  for (int i = 0; i < 8; i++) pad[padlen + i] = (uint8_t)(bits >> (56 - 8 * i));
  update(&c, pad, padlen + 8);
  for (int i = 0; i < 8; i++) {
    out[4 * i] = (uint8_t)(c.h[i] >> 24);
    out[4 * i + 1] = (uint8_t)(c.h[i] >> 16);
    out[4 * i + 2] = (uint8_t)(c.h[i] >> 8);
    out[4 * i + 3] = (uint8_t)c.h[i];
  }
}
