// The event log's hashes in C (issue 14), both without allocation: hardware CRC-32C for record checksums
// (SSE4.2 `crc32`, checked with cpuid at run time; the Swift software CRC otherwise, EventLogTests.CRCTests)
// and SHA-256 for the chain hash through Debian's OpenSSL libcrypto (EventLogTests.SHA256Tests).
#ifndef CLOGHASH_H
#define CLOGHASH_H

#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU has the SSE4.2 `crc32` instruction (x86-64, checked once with cpuid), else 0.
/// Callers use the software implementation when it is 0; ccrc32c_update must not be called then.
int ccrc32c_available(void);

/// Runs the CRC-32C register `crc` (NOT inverted: pass ~0 to start, invert the result yourself) over
/// `len` bytes at `data` with the SSE4.2 `crc32` instruction, 8 bytes per step.
uint32_t ccrc32c_update(uint32_t crc, const void *data, size_t len);

/// SHA-256 (FIPS 180-4, OpenSSL's libcrypto) of `a` (`alen` bytes) followed by `b` (`blen` bytes) into `out` (32 bytes).
/// Either pointer may be NULL when its length is 0.
void csha256(const void *a, size_t alen, const void *b, size_t blen, uint8_t out[32]);

#endif
