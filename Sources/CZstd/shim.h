#define ZDICT_STATIC_LINKING_ONLY 1
#include <zstd.h>
#include <zstd_errors.h>
#include <zdict.h>
