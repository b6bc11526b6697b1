#include "cmalloc.h"

#if defined(__GLIBC__)
#include <malloc.h>

int cmalloc_set_thresholds(int mmap_threshold, int trim_threshold) {
  int ok = mallopt(M_MMAP_THRESHOLD, mmap_threshold);
  return mallopt(M_TRIM_THRESHOLD, trim_threshold) && ok;
}
#else
int cmalloc_set_thresholds(int mmap_threshold, int trim_threshold) {
  (void)mmap_threshold;
  (void)trim_threshold;
  return 0;
}
#endif
