// ZSTD_STATIC_LINKING_ONLY: the magicless frame format of v2 bodies (ZSTD_d_format, ZSTD_getFrameHeader_advanced).
#define ZSTD_STATIC_LINKING_ONLY 1
#define ZDICT_STATIC_LINKING_ONLY 1
#include <zstd.h>
#include <zstd_errors.h>
#include <zdict.h>
