import CSeccomp
import SandboxConfinement

#if canImport(Glibc)
  import Glibc
#endif

/// The seccomp filter of a workload process (launcher step 7), built with libseccomp: default allow,
/// blocked calls fail with EPERM, OpenShell's set (enforcement-and-ssh.md §1.4, "Syscalls"):
///
/// - `clone3` fails with ENOSYS, so glibc falls back to `clone`, whose flags a filter can inspect;
/// - unconditionally: ``blocked`` (ptrace, bpf, mount and the new mount API, setns, io_uring, …);
/// - `socket` with domain AF_PACKET, AF_BLUETOOTH or AF_VSOCK; raw IP sockets (AF_INET/AF_INET6 of
///   type SOCK_RAW or SOCK_PACKET); AF_NETLINK only with protocol 0 (NETLINK_ROUTE, which `getifaddrs`
///   opens as a SOCK_RAW netlink socket, so SOCK_RAW is filtered per domain);
/// - `unshare` and `clone` with any CLONE_NEW* namespace flag (user namespaces above all);
/// - `execveat` with AT_EMPTY_PATH (executing an anonymous file descriptor);
/// - `seccomp(SECCOMP_SET_MODE_FILTER)`.
///
/// System calls unknown to this architecture are skipped.
///
/// Compiled once per supervisor (``compile()``: libseccomp generates the BPF program and
/// `seccomp_export_bpf` writes it out); every launcher start installs that program
/// (`SandboxConfinement.SeccompProgram`) after no_new_privs, instead of linking libseccomp and
/// rebuilding the same filter for each exec.
public enum SeccompFilter {
  static let blocked = [
    "memfd_create", "ptrace", "bpf", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_getfd",
    "pidfd_send_signal", "io_uring_setup", "mount", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
    "open_tree", "mount_setattr", "setns", "umount2", "pivot_root", "userfaultfd", "perf_event_open",
    // Beyond OpenShell's set: the kernel keyring is not namespaced per sandbox (every sandbox runs as the
    // same uid), so keys would be a channel between sandboxes that outlives them (Docker blocks these too).
    "add_key", "keyctl", "request_key",
  ]
  // linux/socket.h, linux/sched.h, fcntl.h, linux/seccomp.h
  static let afInet: UInt64 = 2, afInet6: UInt64 = 10, afNetlink: UInt64 = 16, afPacket: UInt64 = 17, afBluetooth: UInt64 = 31, afVsock: UInt64 = 40
  static let sockRaw: UInt64 = 3, sockPacket: UInt64 = 10, sockTypeMask: UInt64 = 0xf
  static let namespaceFlags: [UInt64] = [
    0x1000_0000 /* NEWUSER */, 0x0002_0000 /* NEWNS */, 0x2000_0000 /* NEWPID */, 0x4000_0000 /* NEWNET */,
    0x0400_0000 /* NEWUTS */, 0x0800_0000 /* NEWIPC */, 0x0200_0000 /* NEWCGROUP */,
  ]
  /// CLONE_NEWTIME: an unshare flag only (for clone it overlaps the exit-signal byte).
  static let cloneNewTime: UInt64 = 0x80
  static let atEmptyPath: UInt64 = 0x1000
  static let setModeFilter: UInt64 = 1

  static let allow: UInt32 = 0x7fff_0000
  static func errno(_ e: Int32) -> UInt32 { 0x0005_0000 | (UInt32(e) & 0xffff) }

  static func eq(_ arg: UInt32, _ value: UInt64) -> scmp_arg_cmp {
    scmp_arg_cmp(arg: arg, op: SCMP_CMP_EQ, datum_a: value, datum_b: 0)
  }
  static func ne(_ arg: UInt32, _ value: UInt64) -> scmp_arg_cmp {
    scmp_arg_cmp(arg: arg, op: SCMP_CMP_NE, datum_a: value, datum_b: 0)
  }
  static func masked(_ arg: UInt32, _ mask: UInt64, _ value: UInt64) -> scmp_arg_cmp {
    scmp_arg_cmp(arg: arg, op: SCMP_CMP_MASKED_EQ, datum_a: mask, datum_b: value)
  }

  /// Builds the filter and exports the BPF program libseccomp generates for it (what `seccomp_load`
  /// would install).
  /// - Throws: `Launcher.Failure` when libseccomp cannot build or export it (no workload may start then).
  /// - Parameter protecting: pids (in the workloads' PID namespace) no workload may signal, re-limit or
  ///   join the process group of (``addProtection(of:_:)``); empty with a root supervisor, whose
  ///   workloads run as another user and cannot do any of it anyway.
  public static func compile(protecting: [Int32] = []) throws -> SeccompProgram {
    guard let ctx = seccomp_init(allow) else { throw Launcher.Failure("seccomp_init failed") }
    defer { seccomp_release(ctx) }
    func add(_ name: String, _ action: UInt32, _ conditions: [scmp_arg_cmp] = []) throws {
      let nr = seccomp_syscall_resolve_name(name)
      guard nr != __NR_SCMP_ERROR else { return }  // not on this architecture
      let r = conditions.withUnsafeBufferPointer { seccomp_rule_add_array(ctx, action, nr, UInt32($0.count), $0.baseAddress) }
      guard r == 0 else { throw Launcher.Failure("seccomp rule for \(name): \(String(cString: strerror(-r)))") }
    }
    let eperm = errno(EPERM)
    try add("clone3", errno(ENOSYS))
    for name in blocked { try add(name, eperm) }
    for domain in [afPacket, afBluetooth, afVsock] { try add("socket", eperm, [eq(0, domain)]) }
    for domain in [afInet, afInet6] {
      for type in [sockRaw, sockPacket] { try add("socket", eperm, [eq(0, domain), masked(1, sockTypeMask, type)]) }
    }
    try add("socket", eperm, [eq(0, afNetlink), ne(2, 0)])
    for flag in namespaceFlags + [cloneNewTime] { try add("unshare", eperm, [masked(0, flag, flag)]) }
    for flag in namespaceFlags { try add("clone", eperm, [masked(0, flag, flag)]) }
    try add("execveat", eperm, [masked(4, atEmptyPath, atEmptyPath)])
    try add("seccomp", eperm, [eq(0, setModeFilter)])
    if !protecting.isEmpty { try addProtection(of: protecting, add) }
    return try export(ctx)
  }

  // fcntl.h, asm-generic/sockios.h
  static let fSetOwn: UInt64 = 8, fSetOwnEx: UInt64 = 15, fioSetOwn: UInt64 = 0x8901, siocSPgrp: UInt64 = 0x8902
  static let low32: UInt64 = 0xffff_ffff
  static func pidArgument(_ pid: Int32) -> UInt64 { UInt64(UInt32(bitPattern: pid)) }

  /// Rules that keep workloads of the supervisor's own user (a gateway without root) away from the
  /// supervisor (and bubblewrap's init), which runs their policy proxy: with the same uid, the kernel
  /// would let them signal it (kill, tgkill, rt_(tg)sigqueueinfo; kill(-1); its process group; a SIGIO
  /// or F_SETSIG signal through a descriptor owned by it), lower its resource limits (prlimit64) or
  /// join its process group (setpgid, then kill(0)). Each fails with EPERM. Pid arguments are compared
  /// on their low 32 bits (the kernel reads them as int). `tkill` (obsolete; thread ids of the
  /// supervisor are not known in advance), `F_SETOWN_EX`, `FIOSETOWN` and `SIOCSPGRP` (their target is
  /// behind a pointer the filter cannot read) are refused outright.
  /// Not covered (denial of service only, never an opening): scheduling and I/O priority of the
  /// supervisor's threads (`setpriority(PRIO_USER)`, `sched_setaffinity`).
  static func addProtection(of pids: [Int32], _ add: (String, UInt32, [scmp_arg_cmp]) throws -> Void) throws {
    let eperm = errno(EPERM)
    try add("kill", eperm, [masked(0, low32, pidArgument(-1))])
    try add("tkill", eperm, [])
    try add("fcntl", eperm, [eq(1, fSetOwnEx)])
    for request in [fioSetOwn, siocSPgrp] { try add("ioctl", eperm, [masked(1, low32, request)]) }
    for pid in pids {
      for target in [pid, -pid] {
        try add("kill", eperm, [masked(0, low32, pidArgument(target))])
        try add("fcntl", eperm, [eq(1, fSetOwn), masked(2, low32, pidArgument(target))])
      }
      for name in ["tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "prlimit64"] {
        try add(name, eperm, [masked(0, low32, pidArgument(pid))])
      }
      try add("setpgid", eperm, [masked(1, low32, pidArgument(pid))])
    }
  }

  /// `seccomp_export_bpf` into a pipe (libseccomp 2.5 exports only to a descriptor; a program is at
  /// most 4096 × 8 bytes, less than a pipe's buffer), read back whole.
  static func export(_ ctx: scmp_filter_ctx) throws -> SeccompProgram {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { throw Launcher.Failure("pipe: \(String(cString: strerror(Glibc.errno)))") }
    defer { close(fds[0]) }
    for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    let r = seccomp_export_bpf(ctx, fds[1])
    close(fds[1])
    guard r == 0 else { throw Launcher.Failure("seccomp_export_bpf: \(String(cString: strerror(-r)))") }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
      let n = chunk.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
      if n > 0 { bytes += chunk[0..<n]; continue }
      if n < 0 && Glibc.errno == EINTR { continue }
      if n < 0 { throw Launcher.Failure("reading the exported seccomp program: \(String(cString: strerror(Glibc.errno)))") }
      break
    }
    return try SeccompProgram(bytes: bytes)
  }
}
