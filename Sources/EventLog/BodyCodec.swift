import CZstd

// zstd for v2 and v3 record bodies (``RecordFormat``) without per-record allocation (issue 14): the writer's
// ``Compressor`` keeps its parameters and dictionary reference between records and compresses into a reused
// buffer; a ``BodyDecoder`` (one per read transaction or chunk) holds one `ZSTD_DCtx` set to the magicless
// frame format and a reused output buffer, and decompresses straight from the LMDB value.

/// A growable raw byte buffer reused between records. Not thread-safe; `free()` it exactly once.
struct ScratchBuffer {
  private(set) var base: UnsafeMutableRawPointer?
  private(set) var capacity = 0

  /// Makes room for at least `n` bytes (contents are not kept) and returns the start.
  mutating func reserve(_ n: Int) -> UnsafeMutableRawPointer {
    if let base, capacity >= n { return base }
    base?.deallocate()
    let c = max(n, 1024, capacity * 2)
    let p = UnsafeMutableRawPointer.allocate(byteCount: c, alignment: 16)
    base = p
    capacity = c
    return p
  }

  mutating func free() {
    base?.deallocate()
    base = nil
    capacity = 0
  }
}

extension Compressor {
  /// The zstd frame magic number as it starts every frame (0xFD2FB528, little-endian).
  static let frameMagic: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD]

  /// Compresses a record body for a v3 value: the single compressed block of the frame (``ZstdSingleBlock``,
  /// `block == true`) when the frame is exactly that, else the whole magicless frame
  /// (``compressFrame(_:dict:)``); nil when neither is smaller than `src` (store the body raw). The result
  /// points into this compressor's buffer (valid until the next call).
  func compressBody(_ src: UnsafeRawBufferPointer, dict: ZstdDictionary?) throws -> (
    stored: UnsafeRawBufferPointer, block: Bool
  )? {
    guard let frame = try compressFrame(src, dict: dict) else { return nil }
    if let b = ZstdSingleBlock.block(of: frame, contentSize: src.count) { return (b, true) }
    return (frame, false)
  }

  /// Compresses a record body as a v2 value stores it: one zstd frame without dictionary id and checksum,
  /// with content size. Returns the frame WITHOUT its 4-byte magic number, pointing into this compressor's
  /// buffer (valid until the next call), or nil when that is not smaller than `src` (store the body raw).
  func compressFrame(_ src: UnsafeRawBufferPointer, dict: ZstdDictionary?) throws -> UnsafeRawBufferPointer? {
    if src.isEmpty { return nil }
    let wanted = dict.map { Int($0.id) } ?? 0
    if configuredFor != wanted {
      // Sticky parameters: set once per dictionary, not per record (ZSTD_compress2 starts a new frame and
      // keeps them).
      var rc = ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters)
      if ZSTD_isError(rc) == 0 {
        rc =
          dict.map { d in d.withCDict { ZSTD_CCtx_refCDict(cctx, $0) } }
          ?? ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, bodyLevelWithoutDictionary)
      }
      if ZSTD_isError(rc) == 0 { rc = ZSTD_CCtx_setParameter(cctx, ZSTD_c_dictIDFlag, 0) }
      if ZSTD_isError(rc) != 0 {
        configuredFor = nil
        throw EventLogError(code: .storage, message: "zstd parameters: \(zstdErrorName(rc))")
      }
      configuredFor = wanted
    }
    let bound = ZSTD_compressBound(src.count)
    let out = scratch.reserve(bound)
    let n = ZSTD_compress2(cctx, out, bound, src.baseAddress, src.count)
    if ZSTD_isError(n) != 0 {
      configuredFor = nil
      throw EventLogError(code: .storage, message: "zstd compression failed: \(zstdErrorName(n))")
    }
    guard n > 4, out.loadUnaligned(as: UInt32.self) == UInt32(littleEndian: 0xFD2F_B528), n - 4 < src.count
    else { return nil }
    return UnsafeRawBufferPointer(start: out + 4, count: n - 4)
  }
}

/// Decompresses v2 and v3 bodies on one thread, reusing one `ZSTD_DCtx` (borrowed from the pool, given back by
/// ``close()``) and its buffers. Results point into the decoder and stay valid until the next call.
final class BodyDecoder {
  private let pool: DecompressorPool
  private var dctx: OpaquePointer?
  private var output = ScratchBuffer()
  /// A single-block body with its frame header and block header put back (``ZstdSingleBlock``).
  private var input = ScratchBuffer()

  init(pool: DecompressorPool) { self.pool = pool }

  deinit { close() }

  /// Gives the context back and frees the buffers (idempotent).
  func close() {
    if let d = dctx { pool.giveBack(d) }
    dctx = nil
    output.free()
    input.free()
  }

  /// Decompresses a body frame stored without its magic number (v2, v3) or, when `block`, a v3 body stored
  /// as the contents of one compressed block (its frame header and block header are rebuilt first,
  /// ``ZstdSingleBlock``); it must expand to exactly `length` bytes (at most ``RecordFormat/maxBodyBytes``,
  /// for a block at most ``ZstdSingleBlock/maxContentSize``, checked by the caller). The frame's content
  /// size is checked before anything is written.
  func decompressBody(_ src: UnsafeRawBufferPointer, length: Int, dict: ZstdDictionary?, block: Bool = false)
    -> Result<UnsafeRawBufferPointer, ZstdFailure>
  {
    if block {
      guard length > 0, length <= ZstdSingleBlock.maxContentSize, !src.isEmpty,
        src.count <= ZstdSingleBlock.maxContentSize, let s = src.baseAddress
      else { return .failure(ZstdFailure("zstd block of \(src.count) bytes for \(length) bytes")) }
      let p = input.reserve(ZstdSingleBlock.maxPrefixSize + src.count)
      let n = ZstdSingleBlock.writePrefix(contentSize: length, blockSize: src.count, into: p)
      (p + n).copyMemory(from: s, byteCount: src.count)
      return decompressBody(UnsafeRawBufferPointer(start: p, count: n + src.count), length: length, dict: dict)
    }
    if dctx == nil {
      // Magicless frames (ZSTD_f_zstd1_magicless) are exactly what v2 stores, so the frame is decoded in place
      // in the LMDB page instead of being copied behind a re-added magic number. Sticky until the context is
      // given back (the pool resets its parameters).
      guard let d = pool.borrow() else { return .failure(ZstdFailure("ZSTD_createDCtx failed")) }
      let rc = ZSTD_DCtx_setParameter(d, ZSTD_d_experimentalParam1 /* ZSTD_d_format */, Int32(ZSTD_f_zstd1_magicless.rawValue))
      if ZSTD_isError(rc) != 0 {
        pool.giveBack(d)
        return .failure(ZstdFailure("zstd magicless format: \(zstdErrorName(rc))"))
      }
      dctx = d
    }
    guard let dctx, let base = src.baseAddress, !src.isEmpty else {
      return .failure(ZstdFailure("empty zstd frame"))
    }
    var header = ZSTD_frameHeader()
    let hrc = ZSTD_getFrameHeader_advanced(&header, base, src.count, ZSTD_f_zstd1_magicless)
    if hrc != 0 || header.frameType != ZSTD_frame || header.frameContentSize == UInt64.max {
      return .failure(ZstdFailure("not a zstd frame with a known content size"))
    }
    guard header.frameContentSize == UInt64(length) else {
      return .failure(ZstdFailure("zstd frame holds \(header.frameContentSize) bytes, header says \(length)"))
    }
    let out = output.reserve(max(length, 1))
    let n: Int
    if let dict {
      n = dict.withDDict { ZSTD_decompress_usingDDict(dctx, out, length, base, src.count, $0) }
    } else {
      n = ZSTD_decompressDCtx(dctx, out, length, base, src.count)
    }
    if ZSTD_isError(n) != 0 { return .failure(ZstdFailure("zstd: \(zstdErrorName(n))")) }
    guard n == length else { return .failure(ZstdFailure("decompressed \(n) bytes, header says \(length)")) }
    return .success(UnsafeRawBufferPointer(start: out, count: length))
  }
}
