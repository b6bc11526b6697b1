#ifndef CMALLOC_H
#define CMALLOC_H

/// glibc's malloc tuning (`mallopt`, <malloc.h>), which Swift's Glibc module does not export.
/// Returns 1 on success, 0 on error (as `mallopt`); 0 where not glibc.
int cmalloc_set_thresholds(int mmap_threshold, int trim_threshold);

#endif
