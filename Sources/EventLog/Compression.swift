import CZstd
import Synchronization

// zstd compression with reusable contexts (http://facebook.github.io/zstd/zstd_manual.html).
// - A `ZSTD_CCtx`/`ZSTD_DCtx` must not be used by two threads at once: the writer thread owns one CCtx;
//   readers borrow DCtxs from a pool.
// - `ZSTD_CDict`/`ZSTD_DDict` are read-only after creation and may be shared between threads.

/// A trained dictionary (bytes as stored in the `dicts` database) with its digested forms.
final class ZstdDictionary: @unchecked Sendable {
  let id: UInt32
  let bytes: [UInt8]
  private let cdict: OpaquePointer
  private let ddict: OpaquePointer

  init(id: UInt32, bytes: [UInt8], level: Int32) throws {
    guard !bytes.isEmpty else { throw EventLogError.corrupt(nil, "dictionary \(id) is empty") }
    let c = bytes.withUnsafeBytes { ZSTD_createCDict($0.baseAddress, $0.count, level) }
    let d = bytes.withUnsafeBytes { ZSTD_createDDict($0.baseAddress, $0.count) }
    guard let c, let d else {
      if let c { ZSTD_freeCDict(c) }
      if let d { ZSTD_freeDDict(d) }
      throw EventLogError.corrupt(nil, "dictionary \(id) could not be loaded by zstd")
    }
    self.id = id
    self.bytes = bytes
    cdict = c
    ddict = d
  }

  deinit {
    ZSTD_freeCDict(cdict)
    ZSTD_freeDDict(ddict)
  }

  func withCDict<T>(_ body: (OpaquePointer) throws -> T) rethrows -> T { try body(cdict) }
  func withDDict<T>(_ body: (OpaquePointer) throws -> T) rethrows -> T { try body(ddict) }
}

/// Loaded dictionaries by id, shared by the writer and all readers. Dictionaries are immutable once stored,
/// so a cached entry never goes stale.
final class DictionaryCache: Sendable {
  private let cache = Mutex<[UInt32: ZstdDictionary]>([:])
  let level: Int32

  init(level: Int32) { self.level = level }

  /// Returns dictionary `id`, loading its bytes with `load` (nil = not stored → `.corrupt`) on first use.
  func dictionary(_ id: UInt32, load: () throws -> [UInt8]?) throws -> ZstdDictionary {
    if let d = cache.withLock({ $0[id] }) { return d }
    guard let bytes = try load() else {
      throw EventLogError.corrupt(nil, "zstd dictionary \(id) is referenced but not stored")
    }
    let d = try ZstdDictionary(id: id, bytes: bytes, level: level)
    cache.withLock { $0[id] = d }
    return d
  }

  func insert(_ d: ZstdDictionary) { cache.withLock { $0[d.id] = d } }
}

/// Why a zstd call failed.
struct ZstdFailure: Error, CustomStringConvertible {
  let description: String
  init(_ d: String) { description = d }
}

func zstdErrorName(_ code: Int) -> String { String(cString: ZSTD_getErrorName(code)) }

/// Compresses payloads on one thread (the writer's), reusing one `ZSTD_CCtx`.
final class Compressor {
  let cctx: OpaquePointer
  let level: Int32
  /// What the context's sticky parameters are set up for (``compressBody(_:dict:)``): nil = not set up,
  /// 0 = no dictionary, else the dictionary id (dictionaries are immutable once stored).
  var configuredFor: Int?
  /// Output buffer of ``compressBody(_:dict:)``, reused between records.
  var scratch = ScratchBuffer()

  /// Level of ``compressBody(_:dict:)`` without a dictionary (``EventLog/Options/compressionLevelWithoutDictionary``).
  let bodyLevelWithoutDictionary: Int32

  init(level: Int32, bodyLevelWithoutDictionary: Int32? = nil) throws {
    guard let c = ZSTD_createCCtx() else { throw EventLogError(code: .storage, message: "ZSTD_createCCtx failed") }
    cctx = c
    self.level = level
    self.bodyLevelWithoutDictionary = bodyLevelWithoutDictionary ?? level
  }

  convenience init(options: EventLog.Options) throws {
    try self.init(level: options.compressionLevel, bodyLevelWithoutDictionary: options.compressionLevelWithoutDictionary)
  }

  deinit {
    ZSTD_freeCCtx(cctx)
    scratch.free()
  }

  /// Compresses `src` (with `dict` if given). Returns the raw bytes instead (`raw == true`) when compression
  /// does not make them smaller.
  func compress(_ src: [UInt8], dict: ZstdDictionary?) throws -> (bytes: [UInt8], raw: Bool) {
    if src.isEmpty { return ([], true) }
    configuredFor = nil  // the one-shot API below may leave other parameters behind
    let bound = ZSTD_compressBound(src.count)
    var out = [UInt8](repeating: 0, count: bound)
    let n: Int = src.withUnsafeBytes { s in
      out.withUnsafeMutableBytes { o in
        if let dict {
          return dict.withCDict { ZSTD_compress_usingCDict(cctx, o.baseAddress, o.count, s.baseAddress, s.count, $0) }
        }
        return ZSTD_compressCCtx(cctx, o.baseAddress, o.count, s.baseAddress, s.count, level)
      }
    }
    if ZSTD_isError(n) != 0 {
      throw EventLogError(code: .storage, message: "zstd compression failed: \(zstdErrorName(n))")
    }
    if n >= src.count { return (src, true) }
    out.removeSubrange(n...)
    return (out, false)
  }
}

/// A pool of `ZSTD_DCtx` for readers on any thread.
final class DecompressorPool: @unchecked Sendable {
  /// A context not in use by any thread.
  private struct Idle: @unchecked Sendable { let ptr: OpaquePointer }
  private let pool = Mutex<[Idle]>([])  // freed in deinit

  /// Takes an idle context (or creates one); give it back with ``giveBack(_:)``.
  func borrow() -> OpaquePointer? { pool.withLock({ $0.popLast() })?.ptr ?? ZSTD_createDCtx() }

  /// Returns a context taken with ``borrow()``, its parameters reset.
  func giveBack(_ dctx: OpaquePointer) {
    _ = ZSTD_DCtx_reset(dctx, ZSTD_reset_session_and_parameters)
    let kept = pool.withLock { p -> Bool in
      if p.count < maxPooled { p.append(Idle(ptr: dctx)); return true }
      return false
    }
    if !kept { ZSTD_freeDCtx(dctx) }
  }
  private let maxPooled = 16

  deinit {
    pool.withLock { for d in $0 { ZSTD_freeDCtx(d.ptr) } }
  }

  /// Decompresses one zstd frame that must expand to exactly `length` bytes. Returns a reason on failure.
  func decompress(_ src: UnsafeRawBufferPointer, length: Int, dict: ZstdDictionary?) -> Result<[UInt8], ZstdFailure> {
    guard let dctx = pool.withLock({ $0.popLast() })?.ptr ?? ZSTD_createDCtx() else {
      return .failure(ZstdFailure("ZSTD_createDCtx failed"))
    }
    defer {
      let kept = pool.withLock { p -> Bool in
        if p.count < maxPooled { p.append(Idle(ptr: dctx)); return true }
        return false
      }
      if !kept { ZSTD_freeDCtx(dctx) }
    }
    if length == 0 && src.isEmpty { return .success([]) }
    // Our frames always carry their content size; check it before allocating `length` bytes, so a damaged
    // length field cannot make us allocate memory the frame does not need.
    let frameSize = ZSTD_getFrameContentSize(src.baseAddress, src.count)
    if frameSize == UInt64.max || frameSize == UInt64.max - 1 {
      return .failure(ZstdFailure("not a zstd frame with a known content size"))
    }
    guard frameSize == UInt64(length) else {
      return .failure(ZstdFailure("zstd frame holds \(frameSize) bytes, header says \(length)"))
    }
    var out = [UInt8](repeating: 0, count: length)
    let n: Int = out.withUnsafeMutableBytes { o in
      // A zero-capacity buffer still needs a valid pointer for zstd.
      var scratch: UInt8 = 0
      return withUnsafeMutablePointer(to: &scratch) { sp in
        let dst = o.baseAddress ?? UnsafeMutableRawPointer(sp)
        if let dict {
          return dict.withDDict { ZSTD_decompress_usingDDict(dctx, dst, o.count, src.baseAddress, src.count, $0) }
        }
        return ZSTD_decompressDCtx(dctx, dst, o.count, src.baseAddress, src.count)
      }
    }
    if ZSTD_isError(n) != 0 { return .failure(ZstdFailure("zstd: \(zstdErrorName(n))")) }
    guard n == length else { return .failure(ZstdFailure("decompressed \(n) bytes, header says \(length)")) }
    return .success(out)
  }
}

/// Trains a zstd dictionary of at most `capacity` bytes from `samples` (`ZDICT_trainFromBuffer`).
func trainZstdDictionary(samples: [[UInt8]], capacity: Int) throws -> [UInt8] {
  var joined = [UInt8]()
  var sizes = [Int]()
  for s in samples where !s.isEmpty {
    joined += s
    sizes.append(s.count)
  }
  guard sizes.count >= 8 else {
    throw EventLogError.invalid("need at least 8 non-empty payloads to train a dictionary, have \(sizes.count)")
  }
  var dict = [UInt8](repeating: 0, count: max(capacity, 256))
  let n: Int = joined.withUnsafeBytes { j in
    sizes.withUnsafeBufferPointer { sz in
      dict.withUnsafeMutableBytes { d in
        ZDICT_trainFromBuffer(d.baseAddress, d.count, j.baseAddress, sz.baseAddress, UInt32(sz.count))
      }
    }
  }
  if ZDICT_isError(n) != 0 {
    throw EventLogError.invalid("dictionary training failed: \(String(cString: ZDICT_getErrorName(n)))")
  }
  return Array(dict[0..<n])
}
