import Foundation
import GRPCCore
import OpenShellAPI
import PolicyKit
import SandboxConfinement
import SandboxProtocol
import Testing

@testable import Gateway

#if canImport(Glibc)
  import Glibc
#endif

/// Confinement of workload processes (issue 15; OpenShell: enforcement-and-ssh.md §1.4), tested from
/// inside real sandboxes with real tools, as an agent would try. Needs root (the supervisor switches to
/// the `sandbox` user) and the tools scripts/setup.sh installs (python3, git, strace, unshare).
@Suite("Confinement", .serialized, .timeLimit(.minutes(4)))
struct ConfinementTests {
  static var isRoot: Bool { geteuid() == 0 }

  /// A shell snippet's combined output (stderr folded into stdout) and exit code.
  func sh(_ c: OSClient, _ name: String, _ script: String) async throws -> (out: String, code: Int32?) {
    let r = try await c.exec(name, ["sh", "-c", "{ " + script + "\n} 2>&1"])
    return (r.out, r.exitCode)
  }

  /// Runs a python3 snippet; returns its stdout (trimmed).
  func py(_ c: OSClient, _ name: String, _ code: String) async throws -> String {
    let r = try await c.exec(name, ["python3", "-c", code])
    return (r.out + r.err).trimmingCharacters(in: .whitespacesAndNewlines)
  }

  @Test("the restrictive default: sandbox user, no capabilities, Landlock paths, seccomp; ordinary work still works", .enabled(if: isRoot))
  func restrictiveDefault() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    let user = try SandboxUser.resolve()
    try await gw.withClient { c in
      _ = try await c.create("conf-a")
      _ = try await c.create("conf-b")
      let a = try await c.wait("conf-a", .ready)
      let b = try await c.wait("conf-b", .ready)

      // `sandbox get`'s view: the Confinement condition says what is in force.
      let cond = a.status.conditions.first { $0.type == "Confinement" }
      #expect(cond?.status == "True", "\(a.status.conditions)")
      #expect(cond?.reason == "Enforced")
      #expect(cond?.message.contains("user sandbox (uid \(user.uid)") == true, "\(String(describing: cond))")
      #expect(cond?.message.contains("landlock ABI") == true && cond?.message.contains("best_effort") == true)
      #expect(cond?.message.contains("seccomp on") == true)

      // User: never root, named sandbox, home and workspace its own.
      let id = try await sh(c, "conf-a", "id -u; id -g; id -un; whoami; stat -c %U /sandbox")
      #expect(id.out == "\(user.uid)\n\(user.gid)\nsandbox\nsandbox\nsandbox\n", "\(id)")
      #expect(user.uid != 0)

      // Capabilities all empty, no_new_privs, seccomp filter mode.
      let status = try await sh(c, "conf-a", "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status")
      let fields = Dictionary(
        uniqueKeysWithValues: status.out.split(separator: "\n").map { line -> (String, String) in
          let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
          return (parts[0], parts.count > 1 ? parts[1] : "")
        })
      for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        #expect(fields[cap] == "0000000000000000", "\(cap): \(status.out)")
      }
      #expect(fields["NoNewPrivs"] == "1")
      #expect(fields["Seccomp"] == "2")
      #expect(try await sh(c, "conf-a", "ulimit -c").out == "0\n")

      // Landlock: writes outside read_write (/var/tmp is a writable tmpfs, mode 1777) are refused.
      let w = try await sh(c, "conf-a", "touch /var/tmp/x; echo rc=$?; mkdir /var/tmp/d; echo rc=$?")
      #expect(w.out.contains("Permission denied") && w.out.contains("rc=1\n"), "\(w)")
      #expect(!w.out.contains("rc=0"), "\(w)")
      // Reads outside read_only: world-readable /dev/zero, the root directory and /dev listings (only
      // Landlock denies these), and the credentials directory (/run is only searchable, 0711, so that the
      // SSH server can open its host key; Landlock closes the directory to every other workload process).
      let r = try await sh(
        c, "conf-a", "head -c1 /dev/zero >/dev/null; echo rc=$?; ls /; echo rc=$?; ls /dev; echo rc=$?; cat /run/openshell/ca.crt; echo rc=$?")
      #expect(r.out.components(separatedBy: "Permission denied").count - 1 == 4 && !r.out.contains("rc=0"), "\(r)")
      // The gateway's data directory and the other sandbox's workspace are not reachable.
      let other = "\(gw.dataDirectory)/sandboxes/\(b.metadata.id)/workspace"
      let hostPaths = try await sh(c, "conf-a", "ls \(gw.dataDirectory)/pki; echo rc=$?; ls \(other); echo rc=$?")
      #expect(hostPaths.out.components(separatedBy: "rc=2").count - 1 == 2, "\(hostPaths)")
      _ = try await c.exec("conf-b", ["sh", "-c", "echo secret > /sandbox/b.txt"])
      #expect(try await sh(c, "conf-a", "cat /sandbox/b.txt; echo rc=$?").out.contains("rc=1"))
      // Allowed: /sandbox and /tmp, reads of /usr and /etc.
      let ok = try await sh(
        c, "conf-a", "echo x > /sandbox/f && echo x > /tmp/f && mkdir -p /tmp/d/e && cat /etc/hostname >/dev/null && ls /usr/bin >/dev/null && echo fine")
      #expect(ok.out == "fine\n", "\(ok)")

      // seccomp (and the missing capabilities): every escape attempt fails.
      let trace = try await sh(c, "conf-a", "strace -f true; echo rc=$?")
      #expect(trace.out.contains("Operation not permitted") && !trace.out.contains("rc=0"), "\(trace)")
      let userns = try await sh(c, "conf-a", "unshare -U true; echo rc=$?; unshare -n true; echo rc=$?")
      #expect(userns.out.contains("Operation not permitted") && !userns.out.contains("rc=0"), "\(userns)")
      let probes = try await py(
        c, "conf-a",
        """
        import ctypes, os, socket
        libc = ctypes.CDLL(None, use_errno=True)
        def sc(nr, *args):
            r = libc.syscall(nr, *args)
            return 0 if r >= 0 else ctypes.get_errno()
        out = []
        out.append(("ptrace", libc.ptrace(0, 0, None, None) == -1 and ctypes.get_errno()))
        def sock(*a):
            try:
                socket.socket(*a).close(); return 0
            except OSError as e: return e.errno
        out.append(("raw", sock(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)))
        out.append(("packet", sock(17, socket.SOCK_RAW, 0)))
        out.append(("vsock", sock(40, socket.SOCK_STREAM, 0)))
        out.append(("netlink_audit", sock(16, socket.SOCK_RAW, 9)))
        out.append(("netlink_route", sock(16, socket.SOCK_RAW, 0)))
        try:
            os.memfd_create("x"); out.append(("memfd", 0))
        except OSError as e: out.append(("memfd", e.errno))
        params = ctypes.create_string_buffer(120)
        out.append(("io_uring_setup", sc(425, 1, params)))
        out.append(("mount", libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == -1 and ctypes.get_errno()))
        out.append(("clone3", sc(435, None, 0)))
        out.append(("bpf", sc(321, 0, None, 0)))
        out.append(("userfaultfd", sc(323, 0)))
        out.append(("setns", sc(308, 0, 0)))
        print(" ".join(f"{k}={v}" for k, v in out))
        """)
      let expected = "ptrace=1 raw=1 packet=1 vsock=1 netlink_audit=1 netlink_route=0 memfd=1 io_uring_setup=1 mount=1 clone3=38 bpf=1 userfaultfd=1 setns=1"
      #expect(probes == expected)

      // Ordinary work: a compiler where installed, python scripts, git in /sandbox.
      if FileManager.default.isExecutableFile(atPath: "/usr/bin/cc") {
        let cc = try await sh(c, "conf-a", "cd /sandbox && printf 'int main(){return 7;}' > m.c && cc -o m m.c && ./m; echo rc=$?")
        #expect(cc.out == "rc=7\n", "\(cc)")
      }
      let script = try await c.exec(
        "conf-a",
        ["python3", "-c", "import json,pathlib; pathlib.Path('/sandbox/p.json').write_text(json.dumps({'a': 1})); print(open('/sandbox/p.json').read())"])
      #expect(script.out == "{\"a\": 1}\n", "\(script.err)")
      let git = try await sh(
        c, "conf-a",
        """
        set -e; cd /sandbox; git init -q repo; cd repo; git config user.email a@b.c; git config user.name Agent
        echo hi > f; git add f; git commit -qm first; git log --oneline | wc -l
        """)
      #expect(git.out == "1\n", "\(git)")

      // The main process is confined like exec: run a sandbox whose command reports its identity.
      _ = try await c.create("conf-main", command: ["sh", "-c", "id -un; grep CapBnd /proc/self/status; touch /var/tmp/m 2>&1; sleep 60"])
      try await c.wait("conf-main", .ready)
      let deadline = ContinuousClock.now + .seconds(10)
      var lines = ""
      while ContinuousClock.now < deadline {
        lines = gw.running.driver!.hub.logs.lines(try await c.get("conf-main").metadata.id, limit: 0).lines.map(\.message).joined(separator: "\n")
        if lines.contains("Permission denied") { break }
        try await Task.sleep(for: .milliseconds(100))
      }
      #expect(lines.contains("sandbox\n") && lines.contains("CapBnd:\t0000000000000000") && lines.contains("'/var/tmp/m': Permission denied"), "\(lines)")
      try await c.deleteAndWait("conf-main")
      try await c.deleteAndWait("conf-a")
      try await c.deleteAndWait("conf-b")
    }
    await gw.stopEverything()
  }
}

extension ConfinementTests {
  /// The launcher runs as root until it has confined itself: the workload's environment must not reach it.
  /// A sandbox whose environment preloads the agent's own library: the library runs only in confined
  /// processes (the sandbox user), never as root. The kernel keyring is closed too.
  @Test(
    "LD_PRELOAD from the sandbox environment never runs as root; no kernel keyring",
    .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/bin/cc")))
  func preloadNeverRunsPrivileged() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    let user = try SandboxUser.resolve()
    try await gw.withClient { c in
      _ = try await c.create("preload", env: ["LD_PRELOAD": "/sandbox/evil.so"])
      try await c.wait("preload", .ready)
      let source = """
        #include <stdio.h>
        #include <unistd.h>
        __attribute__((constructor)) static void evil(void) {
          FILE *f = fopen("/sandbox/preload.log", "a");
          if (f) { fprintf(f, "uid=%d\\n", (int)getuid()); fclose(f); }
        }
        """
      let build = try await c.exec(
        "preload", ["sh", "-c", "cat > /sandbox/evil.c && cc -shared -fPIC -o /sandbox/evil.so /sandbox/evil.c && echo built"], stdin: Data(source.utf8))
      #expect(build.out.contains("built"), "\(build.out) \(build.err)")
      _ = try await c.exec("preload", ["true"])
      _ = try await c.exec("preload", ["/bin/echo", "x"])
      let log = try await c.exec("preload", ["cat", "/sandbox/preload.log"])
      let lines = log.out.split(separator: "\n").map(String.init)
      #expect(!lines.isEmpty, "the preloaded library ran in the workload (the test can see it): \(log.out) \(log.err)")
      #expect(lines.allSatisfy { $0 == "uid=\(user.uid)" }, "ran with another uid (root?): \(lines)")
      let keys = try await c.exec(
        "preload",
        ["python3", "-c", "import ctypes; l = ctypes.CDLL(None, use_errno=True); r = l.syscall(248, b'user', b'k', b'v', 1, -3); print(r, ctypes.get_errno())"])
      #expect(keys.out == "-1 1\n", "add_key: \(keys.out) \(keys.err)")
      try await c.deleteAndWait("preload")
    }
    await gw.stopEverything()
  }

  func create(_ c: OSClient, _ name: String, policy: Openshell_Sandbox_V1_SandboxPolicy, command: [String] = []) async throws {
    _ = try await c.createSandbox(
      .with {
        $0.name = name
        $0.spec = .with {
          $0.policy = policy; $0.command = command
        }
        $0.workspaceScope = .with { $0.workspace = "default" }
      })
  }

  func logText(_ gw: SandboxGateway, _ c: OSClient, _ name: String) async throws -> String {
    gw.running.driver!.hub.logs.lines(try await c.get(name).metadata.id, limit: 0).lines.map { "\($0.level) \($0.message)" }.joined(separator: "\n")
  }

  @Test(
    "no Landlock in the kernel (test switch): best_effort runs without filesystem limits and says so loudly; hard_requirement fails naming the kernel",
    .enabled(if: isRoot))
  func landlockUnavailable() async throws {
    let gw = try await SandboxGateway.start { $0.simulateNoLandlock = true }
    defer { Task { await gw.stopEverything() } }
    let kernel = LandlockProbe.kernelRelease()
    try await gw.withClient { c in
      try await create(c, "ll-soft", policy: PolicyRules.restrictiveDefault)
      var hard = PolicyRules.restrictiveDefault
      hard.landlock.compatibility = "hard_requirement"
      try await create(c, "ll-hard", policy: hard)

      let soft = try await c.wait("ll-soft", .ready)
      let cond = soft.status.conditions.first { $0.type == "Confinement" }
      #expect(cond?.status == "False" && cond?.reason == "LandlockUnavailable", "\(soft.status.conditions)")
      #expect(cond?.message.contains("kernel \(kernel)") == true && cond?.message.contains("WITHOUT filesystem limits") == true)
      #expect(cond?.message.contains("seccomp on") == true)
      // No filesystem limits (as reported), but the rest of the confinement holds.
      let w = try await sh(c, "ll-soft", "touch /var/tmp/x && echo wrote; id -un; unshare -U true; echo rc=$?")
      #expect(w.out.hasPrefix("wrote\nsandbox\n") && w.out.contains("Operation not permitted") && w.out.hasSuffix("rc=1\n"), "\(w)")
      let log = try await logText(gw, c, "ll-soft")
      #expect(log.contains("ERROR SECURITY (high):") && log.contains("WITHOUT filesystem limits"), "\(log)")

      let failed = try await c.wait("ll-hard", .error)
      let ready = failed.status.conditions.first { $0.type == "Ready" }
      #expect(ready?.reason == "LandlockUnavailable", "\(failed.status.conditions)")
      #expect(ready?.message.contains("hard_requirement") == true && ready?.message.contains("kernel \(kernel)") == true, "\(String(describing: ready))")
      try await c.deleteAndWait("ll-soft")
      try await c.deleteAndWait("ll-hard")
    }
    await gw.stopEverything()
  }

  @Test(
    "startup-only sections: a live change is refused naming the section; network stays live; stop + start applies a new filesystem policy", .enabled(if: isRoot)
  )
  func startupOnlySections() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      let base = PolicyRules.restrictiveDefault
      try await create(c, "live", policy: base)
      try await c.wait("live", .ready)

      var landlock = base
      landlock.landlock.compatibility = "hard_requirement"
      let e1 = await rpcError { _ = try await c.setPolicy("live", landlock) }
      #expect(e1?.code == .invalidArgument)
      #expect(
        e1?.message.contains("landlock policy cannot be changed on a live sandbox (applied at startup; `sandbox stop` + `sandbox start` applies it)") == true,
        "\(String(describing: e1))")
      var wider = base
      wider.filesystem.readWrite.append("/var/tmp")
      let e2 = await rpcError { _ = try await c.setPolicy("live", wider) }
      #expect(e2?.code == .invalidArgument)
      #expect(e2?.message.contains("filesystem read_write path '/var/tmp' cannot be added on a live sandbox") == true, "\(String(describing: e2))")
      var process = base
      process.process.runAsGroup = "sandbox"
      process.process.runAsUser = "sandbox"
      process.filesystem.includeWorkdir = false
      let e3 = await rpcError { _ = try await c.setPolicy("live", process) }
      #expect(e3?.message.contains("filesystem include_workdir cannot be changed on a live sandbox") == true)

      // A network-only change is live, and the supervisor loads it.
      var network = base
      network.networkPolicies["pypi"] = .with {
        $0.name = "pypi";
        $0.endpoints = [
          .with {
            $0.host = "pypi.org"; $0.ports = [443]
          }
        ]
      }
      let v = try await c.setPolicy("live", network).version
      let deadline = ContinuousClock.now + .seconds(10)
      var status = try await c.policyStatus("live", v).revision.status
      while status != .loaded && ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(50))
        status = try await c.policyStatus("live", v).revision.status
      }
      #expect(status == .loaded)
      #expect(try await sh(c, "live", "touch /var/tmp/x; echo rc=$?").out.contains("Permission denied"))

      // Stopped, the sandbox takes the new filesystem policy at its next start.
      _ = try await c.stopSandbox(.with { $0.name = "live" })
      try await c.wait("live", .stopped)
      wider.networkPolicies = network.networkPolicies
      _ = try await c.setPolicy("live", wider)
      _ = try await c.startSandbox(.with { $0.name = "live" })
      try await c.wait("live", .ready)
      #expect(try await sh(c, "live", "touch /var/tmp/x && echo wrote").out == "wrote\n")
      try await c.deleteAndWait("live")
    }
    await gw.stopEverything()
  }

  @Test(
    "a host account change (useradd renames /etc/passwd) leaves a running sandbox's identity as it was; host account files stay out",
    .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/sbin/useradd")))
  func hostAccountChangeKeepsSandboxIdentity() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    let account = "oshid\(UInt32.random(in: 10000...99999))"
    try await gw.withClient { c in
      _ = try await c.create("ident")
      try await c.wait("ident", .ready)
      let before = try await sh(c, "ident", "whoami; grep -c . /etc/passwd; ls /etc/shadow /etc/subuid")
      #expect(before.out.hasPrefix("sandbox\n3\n") && before.out.contains("No such file"), "\(before)")
      // What a host administrator does while sandboxes run: useradd writes a new /etc/passwd and
      // renames it over the old one.
      #expect(SmallDisk.run("/usr/sbin/useradd", ["--no-create-home", account]) == 0)
      defer { _ = SmallDisk.run("/usr/sbin/userdel", [account]) }
      let after = try await sh(c, "ident", "whoami; id -un; grep -c . /etc/passwd; grep -c \(account) /etc/passwd")
      #expect(after.out == "sandbox\nsandbox\n3\n0\n", "\(after)")
      try await c.deleteAndWait("ident")
    }
    await gw.stopEverything()
  }

  @Test("fail closed: a filesystem policy none of whose paths exists refuses to run commands (126, one line)", .enabled(if: isRoot))
  func emptyRulesetFailsClosed() async throws {
    let gw = try await SandboxGateway.start()
    defer { Task { await gw.stopEverything() } }
    try await gw.withClient { c in
      var policy = PolicyRules.restrictiveDefault
      policy.filesystem = .with {
        $0.readOnly = ["/nonexistent-a"]; $0.readWrite = ["/nonexistent-b"]; $0.includeWorkdir = false
      }
      try await create(c, "empty-rules", policy: policy)
      try await c.wait("empty-rules", .ready)
      let r = try await c.exec("empty-rules", ["sh", "-c", "echo ran"])
      #expect(r.exitCode == 126)
      #expect(r.out.isEmpty)
      #expect(
        r.err
          == "openshell-sandbox: confinement failed: no filesystem_policy path could be opened; an empty Landlock ruleset is refused; the command was not run\n"
      )
      try await c.deleteAndWait("empty-rules")
    }
    await gw.stopEverything()
  }
}

extension ConfinementTests {
  @Test("the plan survives the launcher's command line (any path), and bad options are refused with one line")
  func planOptions() throws {
    let plan = ConfinementPlan(
      user: "sandbox", uid: 10001, gid: 10002, groups: [10002, 7], readOnly: ["/usr", "/with space", "/--rw"],
      readWrite: ["/tmp", "/dev/null"], includeWorkdir: true, workdir: "/sandbox", landlockCompatibility: "hard_requirement",
      simulateNoLandlock: true, networkNamespacePath: "/run/netns/x")
    let (parsed, command) = try ConfinementPlan.parse(ArraySlice(plan.launcherArguments + ["--", "sh", "-c", "echo --ro"]))
    #expect(parsed == plan)
    #expect(command == ["sh", "-c", "echo --ro"])
    let rootless = ConfinementPlan(
      user: "sandbox", uid: nil, gid: nil, groups: [], readOnly: [], readWrite: ["/tmp"], includeWorkdir: false, landlockCompatibility: "best_effort")
    #expect(try ConfinementPlan.parse(ArraySlice(rootless.launcherArguments + ["--", "true"])).0 == rootless)

    func failure(_ args: [String]) -> String {
      do { _ = try ConfinementPlan.parse(ArraySlice(args)); return "" } catch { return "\(error)" }
    }
    #expect(failure(["--bogus", "--", "true"]) == "unknown option '--bogus'")
    #expect(failure(["--user", "sandbox", "--landlock", "best_effort", "--"]) == "no command after '--'")
    #expect(failure(["--user", "sandbox", "--landlock", "maybe", "--", "true"]) == "--landlock must be best_effort or hard_requirement, got 'maybe'")
    #expect(failure(["--uid", "x", "--", "true"]) == "--uid expects a number, got 'x'")
    #expect(failure(["--uid", "1", "--landlock", "best_effort", "--", "true"]) == "--uid and --gid go together")
    #expect(failure(["--ro"]) == "--ro needs a value")
  }
}
