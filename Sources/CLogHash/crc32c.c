// Hardware CRC-32C (see cloghash.h): the SSE4.2 `crc32` instruction computes exactly the Castagnoli CRC (reflected polynomial
// 0x82F63B78) used by the event log. Only this function is compiled for SSE4.2 (target attribute), so the
// rest of the program keeps the baseline x86-64 instruction set, and ccrc32c_available() checks the CPU at
// run time (cpuid leaf 1, ECX bit 20) before the Swift side ever calls it. On other architectures the
// functions exist but report "unavailable" (the Swift slicing-by-8 fallback is used).
#include "cloghash.h"

#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <nmmintrin.h>

int ccrc32c_available(void) {
  static int cached = -1;
  int c = __atomic_load_n(&cached, __ATOMIC_RELAXED);
  if (c < 0) {
    unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
    c = (__get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_SSE4_2)) ? 1 : 0;
    __atomic_store_n(&cached, c, __ATOMIC_RELAXED);
  }
  return c;
}

__attribute__((target("sse4.2"))) uint32_t ccrc32c_update(uint32_t crc, const void *data, size_t len) {
  const unsigned char *p = (const unsigned char *)data;
  uint64_t c = crc;
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);  // unaligned load
    c = _mm_crc32_u64(c, w);
    p += 8;
    len -= 8;
  }
  uint32_t c32 = (uint32_t)c;
  while (len > 0) {
    c32 = _mm_crc32_u8(c32, *p);
    p++;
    len--;
  }
  return c32;
}
#else
int ccrc32c_available(void) { return 0; }

uint32_t ccrc32c_update(uint32_t crc, const void *data, size_t len) {
  (void)data;
  (void)len;
  return crc;
}
#endif
