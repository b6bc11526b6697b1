// Hardware CRC-32C (Castagnoli) for the event log's record checksums (issue 14).
#ifndef CCRC32C_H
#define CCRC32C_H

#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU has the SSE4.2 `crc32` instruction (x86-64, checked once with cpuid), else 0.
/// Callers use the software implementation when it is 0; ccrc32c_update must not be called then.
int ccrc32c_available(void);

/// Runs the CRC-32C register `crc` (NOT inverted: pass ~0 to start, invert the result yourself) over
/// `len` bytes at `data` with the SSE4.2 `crc32` instruction, 8 bytes per step.
uint32_t ccrc32c_update(uint32_t crc, const void *data, size_t len);

#endif
