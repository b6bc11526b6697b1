import CMalloc

/// glibc malloc settings for processes that move bulk byte streams in large messages (the supervisor,
/// the CLI's `ssh-proxy`; issue 11 throughput).
///
/// A relay message is 256 KiB, above glibc's initial mmap threshold (128 KiB), and a few are alive at
/// once. glibc then either maps each one afresh or, once its dynamic threshold has risen, trims the
/// heap top as soon as more than twice the threshold is free there — so each new message lands on
/// fresh pages again: `perf` showed page faults under protobuf's bytes decoding (supervisor) and
/// gRPC's message serialization (ssh-proxy). Fixed thresholds keep messages up to 4 MiB on the heap
/// and the heap from being trimmed below 64 MiB of free top, so freed message memory is reused.
/// Cost: up to the process's high-water mark of freed heap memory stays resident (the relays are
/// bounded: a few MiB per stream).
public enum MallocTuning {
  /// Applies the settings (idempotent; call early, before threads allocate). Returns false if glibc
  /// refused one, or on another C library (the defaults then stay, which is only slower).
  @discardableResult
  public static func forByteStreams() -> Bool {
    // The mmap threshold may be at most 32 MiB on 64-bit (HEAP_MAX_SIZE / 2).
    cmalloc_set_thresholds(4 << 20, 64 << 20) == 1
  }
}
