// The frame metadata a version 3 record leaves out (issue 14). A small body compresses to one zstd frame
// holding one compressed block; the frame's header (frame header descriptor + frame content size) and the
// block's 3-byte header are a function of the body length and the block's length, both of which the record
// stores anyway. So the writer keeps only the block's contents when the frame zstd produced is EXACTLY the
// one ``ZstdSingleBlock/writePrefix(contentSize:blockSize:into:)`` rebuilds, and the reader puts the same
// bytes back in front before decompressing with the ordinary frame API (no deprecated block API).
// Byte layouts: RFC 8878 §3.1.1.1 (frame header) and §3.1.1.2 (block header).

/// Rebuilds the magicless frame header + block header of a body stored as one compressed zstd block.
enum ZstdSingleBlock {
  /// Largest body (and largest block content) kept as one block: `ZSTD_BLOCKSIZE_MAX`, 128 KiB. Larger
  /// bodies span several blocks and are stored as a whole frame.
  static let maxContentSize = 1 << 17
  /// Longest prefix: descriptor (1) + frame content size (≤ 4 for ≤ 128 KiB) + block header (3).
  static let maxPrefixSize = 8

  /// Writes the prefix zstd puts in front of a single compressed block holding `contentSize` bytes in
  /// `blockSize` stored bytes: the frame header descriptor (single segment, no checksum, no dictionary id,
  /// frame content size field sized for `contentSize`), the frame content size (little-endian; the 2-byte
  /// form is offset by 256, RFC 8878 §3.1.1.1.4), and the block header (last block, type 2 = compressed,
  /// size). Returns the number of bytes written (at most ``maxPrefixSize``). Requires
  /// `0 < contentSize <= maxContentSize` and `0 < blockSize <= maxContentSize`.
  static func writePrefix(contentSize: Int, blockSize: Int, into p: UnsafeMutableRawPointer) -> Int {
    precondition(contentSize > 0 && contentSize <= maxContentSize && blockSize > 0 && blockSize <= maxContentSize)
    var o = 0
    func put(_ b: Int) {
      p.storeBytes(of: UInt8(truncatingIfNeeded: b), toByteOffset: o, as: UInt8.self)
      o += 1
    }
    let singleSegment = 0x20
    if contentSize < 256 {
      put(singleSegment)  // FCS field code 0: one byte when single segment
      put(contentSize)
    } else if contentSize < 65_536 + 256 {
      put(0x40 | singleSegment)
      let v = contentSize - 256
      put(v)
      put(v >> 8)
    } else {
      put(0x80 | singleSegment)
      for s in stride(from: 0, to: 32, by: 8) { put(contentSize >> s) }
    }
    let blockHeader = blockSize << 3 | 2 << 1 | 1  // size, type compressed, last block
    put(blockHeader)
    put(blockHeader >> 8)
    put(blockHeader >> 16)
    return o
  }

  /// If `frame` (a magicless zstd frame of a `contentSize`-byte input) is one compressed block behind
  /// exactly the prefix ``writePrefix(contentSize:blockSize:into:)`` rebuilds, returns the block's contents
  /// (a slice of `frame`); nil otherwise (several blocks, a raw or RLE block, another header form).
  static func block(of frame: UnsafeRawBufferPointer, contentSize: Int) -> UnsafeRawBufferPointer? {
    guard contentSize > 0, contentSize <= maxContentSize, let base = frame.baseAddress else { return nil }
    let prefixSize = contentSize < 256 ? 5 : contentSize < 65_536 + 256 ? 6 : 8
    let blockSize = frame.count - prefixSize
    guard blockSize > 0, blockSize <= maxContentSize else { return nil }
    return withUnsafeTemporaryAllocation(byteCount: maxPrefixSize, alignment: 1) { tmp -> UnsafeRawBufferPointer? in
      let n = writePrefix(contentSize: contentSize, blockSize: blockSize, into: tmp.baseAddress!)
      guard n == prefixSize else { return nil }
      for k in 0..<n where tmp[k] != base.load(fromByteOffset: k, as: UInt8.self) { return nil }
      return UnsafeRawBufferPointer(rebasing: frame[n...])
    }
  }
}
