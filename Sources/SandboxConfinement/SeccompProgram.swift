import CConfine

#if canImport(Glibc)
  import Glibc
#endif

/// A compiled seccomp filter: the classic-BPF program libseccomp generates for the workload filter
/// (`SandboxSeccomp.SeccompFilter.compile()`, `seccomp_export_bpf`), as raw bytes (8 bytes per
/// `struct sock_filter` instruction, host byte order).
///
/// The supervisor compiles the filter once and hands it to every launcher start as the option
/// `--seccomp-bpf HEX` (launcher step 7), so that the launcher (started for every exec) neither links
/// libseccomp nor rebuilds the same filter each time; the program is exactly what `seccomp_load` would
/// have installed (libseccomp is still the compiler; OpenShell: enforcement-and-ssh.md §1.4, "Syscalls").
/// The kernel verifies the program when it is installed; a launcher given no program refuses to run
/// the command (fail closed).
public struct SeccompProgram: Sendable, Equatable {
  /// The program, `instructions × 8` bytes.
  public let bytes: [UInt8]

  /// Size of one `struct sock_filter` (u16 code, u8 jt, u8 jf, u32 k).
  static let instructionSize = 8
  /// The kernel's limit on a classic-BPF program (BPF_MAXINSNS).
  static let maxInstructions = 4096

  /// - Throws: ``Launcher/Failure`` when `bytes` is not a whole, non-empty program within the kernel's limit.
  public init(bytes: [UInt8]) throws {
    guard !bytes.isEmpty, bytes.count % Self.instructionSize == 0 else {
      throw Launcher.Failure("the seccomp program has \(bytes.count) bytes, not a whole number of 8-byte instructions")
    }
    guard bytes.count / Self.instructionSize <= Self.maxInstructions else {
      throw Launcher.Failure("the seccomp program has more than \(Self.maxInstructions) instructions")
    }
    self.bytes = bytes
  }

  /// Number of instructions.
  public var instructions: Int { bytes.count / Self.instructionSize }

  /// The program as lower-case hex (the launcher option's value).
  public var hex: String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for b in bytes {
      out.append(digits[Int(b >> 4)])
      out.append(digits[Int(b & 0xf)])
    }
    return String(decoding: out, as: UTF8.self)
  }

  /// Parses ``hex``.
  /// - Throws: ``Launcher/Failure`` on an odd length, a non-hex digit or a malformed program.
  public init(hex: String) throws {
    let utf8 = Array(hex.utf8)
    guard utf8.count % 2 == 0 else { throw Launcher.Failure("--seccomp-bpf: odd number of hex digits") }
    func nibble(_ c: UInt8) throws -> UInt8 {
      switch c {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
      case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
      case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
      default: throw Launcher.Failure("--seccomp-bpf: not a hex digit in the program")
      }
    }
    var bytes = [UInt8]()
    bytes.reserveCapacity(utf8.count / 2)
    var i = 0
    while i < utf8.count {
      bytes.append(try nibble(utf8[i]) << 4 | nibble(utf8[i + 1]))
      i += 2
    }
    try self.init(bytes: bytes)
  }

  /// Installs the program on the calling thread (`seccomp(SECCOMP_SET_MODE_FILTER)`); needs no_new_privs.
  /// - Throws: ``Launcher/Failure`` when the kernel refuses it (the spawn is aborted).
  func install() throws {
    let r = bytes.withUnsafeBytes { cconfine_seccomp_set_filter($0.baseAddress, UInt16(instructions)) }
    guard r == 0 else { throw Launcher.Failure("seccomp(SECCOMP_SET_MODE_FILTER): \(String(cString: strerror(-r)))") }
  }
}
