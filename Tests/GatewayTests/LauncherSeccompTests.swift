import Foundation
import SandboxConfinement
import SandboxProtocol
import SandboxSeccomp
import Testing

@testable import Gateway

#if canImport(Glibc)
  import Glibc
#endif

/// The seccomp filter reaches the launcher compiled (libseccomp in the supervisor, `--seccomp-bpf HEX`
/// to `openshell-sandbox-launch`): the launcher run directly, as the supervisor runs it, installs
/// exactly that program and refuses to run anything without a valid one. (The sandbox tests above
/// show the same filter in force from inside real sandboxes.)
extension ConfinementTests {
  @Test("the compiled seccomp program is what the launcher installs; no program, a malformed or a refused one runs nothing", .enabled(if: isRoot))
  func compiledFilterDelivered() throws {
    let plan = try Self.hostLauncherPlan()
    let program = try SeccompFilter.compile()
    #expect(program.instructions > 20 && program.bytes.count == program.instructions * 8)
    #expect(try SeccompProgram(hex: program.hex) == program)

    // In force: filter mode, the program's denials (user namespace, raw socket, ptrace), clone3 → ENOSYS.
    let probe = """
      import ctypes, socket, subprocess
      libc = ctypes.CDLL(None, use_errno=True)
      status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
      def raw():
          try: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close(); return 0
          except OSError as e: return e.errno
      u = subprocess.run(["unshare", "-U", "true"], capture_output=True)
      ptrace = libc.ptrace(0, 0, None, None) == -1 and ctypes.get_errno()
      clone3 = 0 if libc.syscall(435, None, 0) >= 0 else ctypes.get_errno()
      print(status["Seccomp"].strip(), status["NoNewPrivs"].strip(), raw(), u.returncode != 0, ptrace, clone3)
      """
    let on = try launch(plan.launcherArguments + ["--seccomp-bpf", program.hex], ["python3", "-c", probe])
    #expect(on.code == 0 && on.out == "2 1 1 True 1 38\n", "\(on)")

    // Without the program, with a malformed one, or with one the kernel refuses: exit 126, one line, nothing run.
    let prefix = "openshell-sandbox: confinement failed: "
    let none = try launch(plan.launcherArguments, ["sh", "-c", "echo ran"])
    #expect(none.code == 126 && none.out.isEmpty)
    #expect(none.err == prefix + "no seccomp program (--seccomp-bpf) was given; the command was not run\n", "\(none)")
    let odd = try launch(plan.launcherArguments + ["--seccomp-bpf", String(program.hex.dropLast())], ["sh", "-c", "echo ran"])
    #expect(odd.code == 126 && odd.out.isEmpty && odd.err.hasPrefix(prefix + "--seccomp-bpf: odd number of hex digits"), "\(odd)")
    let partial = try launch(plan.launcherArguments + ["--seccomp-bpf", String(program.hex.dropLast(2))], ["sh", "-c", "echo ran"])
    #expect(partial.code == 126 && partial.out.isEmpty && partial.err.contains("not a whole number of 8-byte instructions"), "\(partial)")
    // One instruction that never returns: well-formed bytes the kernel's verifier rejects.
    let refused = try launch(plan.launcherArguments + ["--seccomp-bpf", "0000000000000000"], ["sh", "-c", "echo ran"])
    #expect(refused.code == 126 && refused.out.isEmpty, "\(refused)")
    #expect(refused.err == prefix + "seccomp(SECCOMP_SET_MODE_FILTER): Invalid argument; the command was not run\n", "\(refused)")
  }
}
