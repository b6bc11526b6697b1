import Foundation
import SandboxProtocol
import Testing

@testable import Gateway

/// The in-process set-up of a root gateway's sandbox network namespace (``NetworkNamespace``, issue 14) against
/// the five commands it replaces (`ip netns add`, `ip link add … veth … netns`, two `ip -batch`, `nft -f` in
/// the namespace): what iproute2 and nft show of both must be the same, and nothing may be left behind by a
/// teardown or a failed set-up.
@Suite(.serialized, .timeLimit(.minutes(2)), .enabled(if: geteuid() == 0, "needs root (named network namespaces, veth pairs)"))
struct SandboxNetworkSetUpTests {
  static let ip = "/usr/sbin/ip"

  /// Runs `tool` and returns its standard output; throws with its standard error when it fails.
  static func output(_ tool: String, _ args: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tool)
    p.arguments = args
    let out = Pipe()
    let err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    let errors = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else {
      throw SpawnError("\(tool) \(args.joined(separator: " ")): \(String(decoding: errors, as: UTF8.self))")
    }
    return String(decoding: data, as: UTF8.self)
  }

  /// A new sandboxes directory holding the directory of one sandbox; returns both.
  static func sandboxDirectory() throws -> (root: String, id: String) {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("netsetup-\(UUID().uuidString)").path
    let id = UUID().uuidString.lowercased()
    try FileManager.default.createDirectory(atPath: root + "/" + id, withIntermediateDirectories: true)
    return (root, id)
  }

  static func linkExists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: "/sys/class/net/" + name) }

  /// Waits (at most 4 s) for the kernel's asynchronous destruction of a namespace's veth pair.
  static func waitGone(_ link: String) async throws {
    for _ in 0..<200 where linkExists(link) { try await Task.sleep(for: .milliseconds(20)) }
  }

  /// The first index from `start` on whose host interface, and the `count - 1` after it, do not exist.
  static func freeIndex(from start: Int, count: Int = 1) -> Int {
    var i = start
    while (i..<(i + count)).contains(where: { linkExists("osh\($0)h") }) { i += 1 }
    return i
  }

  /// What the gateway ran before issue 14, verbatim, for namespace `ns` and allocation `a`.
  static func oldSetUp(_ ns: String, _ a: SandboxNetworks.Allocation, in dir: String) throws {
    func file(_ name: String, _ text: String) throws -> String {
      try text.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8)
      return dir + "/" + name
    }
    _ = try output(ip, ["netns", "add", ns])
    _ = try output(
      ip, ["link", "add", a.hostInterface, "mtu", "65535", "type", "veth", "peer", "name", a.sandboxInterface, "mtu", "65535", "netns", ns])
    let host = "addr add \(a.hostAddress)/30 dev \(a.hostInterface)\nlink set \(a.hostInterface) up\n"
    _ = try output(ip, ["-batch", try file("ip-host.batch", host)])
    let sandbox = """
      link set lo up
      addr add \(a.sandboxAddress)/30 dev \(a.sandboxInterface)
      link set \(a.sandboxInterface) up
      route add default via \(a.hostAddress)

      """
    _ = try output(ip, ["-n", ns, "-batch", try file("ip-sandbox.batch", sandbox)])
    _ = try output(ip, ["netns", "exec", ns, "/usr/sbin/nft", "-f", try file("nftables.conf", SandboxNetworks.ruleset(a))])
  }

  /// `text` with what differs between two equal set-ups replaced: interface indexes, MAC addresses, netns ids
  /// and names, the allocation's interface names (oshXh, oshXs) and addresses (NET, HOST, SANDBOX, BRD).
  static func normalized(_ text: String, _ a: SandboxNetworks.Allocation, _ ns: String) -> String {
    var t = text.replacingOccurrences(of: ns, with: "NS")
    let names = [
      SandboxNetworks.Allocation.address(a.index, 0): "NET", a.hostAddress: "HOST", a.sandboxAddress: "SANDBOX",
      SandboxNetworks.Allocation.address(a.index, 3): "BRD", a.hostInterface: "oshXh", a.sandboxInterface: "oshXs",
    ]
    let patterns: [(String, String)] = [
      (#"(?m)^\d+: "#, ""), (#"@if\d+"#, "@ifN"), (#"link/ether [0-9a-f:]+"#, "link/ether MAC"), (#"link-netnsid \d+"#, "link-netnsid N"),
    ]
    for (pattern, replacement) in patterns { t = t.replacingOccurrences(of: pattern, with: replacement, options: .regularExpression) }
    // Whole tokens only (10.200.0.1 is a prefix of 10.200.0.12).
    let token = try! NSRegularExpression(pattern: #"(?<![\w.])(10\.200\.\d+\.\d+|osh\d+[hs])(?![\w.])"#)
    for m in token.matches(in: t, range: NSRange(t.startIndex..., in: t)).reversed() {
      let range = Range(m.range, in: t)!
      if let name = names[String(t[range])] { t.replaceSubrange(range, with: name) }
    }
    return t
  }

  /// What the tools show of namespace `ns` set up for `a`, and of its host side, normalized.
  static func observed(_ ns: String, _ a: SandboxNetworks.Allocation) throws -> [String: String] {
    let views: [String: [String]] = [
      "sandbox links": ["-d", "-n", ns, "link", "show"],
      "sandbox addresses": ["-n", ns, "-4", "addr", "show"],
      "sandbox routes": ["-n", ns, "route", "show"],
      "sandbox rules": ["netns", "exec", ns, "/usr/sbin/nft", "-a", "list", "ruleset"],
      "host link": ["-d", "link", "show", a.hostInterface],
      "host addresses": ["-4", "addr", "show", "dev", a.hostInterface],
      "host route": ["route", "show", "dev", a.hostInterface],
    ]
    return try views.mapValues { normalized(try output(ip, $0), a, ns) }
  }

  @Test("the in-process set-up gives what the ip/nft commands gave; teardown leaves no namespace file and no veth")
  func sameAsTheCommands() async throws {
    let (root, id) = try Self.sandboxDirectory()
    defer { try? FileManager.default.removeItem(atPath: root) }
    let networks = SandboxNetworks(sandboxesDirectory: root)
    let ns = networks.namespaceName(id)
    let a = try networks.setUp(id)
    defer { networks.tearDown(id) }
    let reference = "openshell-netsetup-ref-\(getpid())"
    let b = SandboxNetworks.Allocation(index: Self.freeIndex(from: (a.index + 1) % SandboxNetworks.capacity))
    defer { _ = try? Self.output(Self.ip, ["netns", "del", reference]) }
    let scratch = root + "/reference"
    try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    try Self.oldSetUp(reference, b, in: scratch)

    #expect(try Self.output(Self.ip, ["netns", "list"]).contains(ns))
    let new = try Self.observed(ns, a)
    let old = try Self.observed(reference, b)
    for key in old.keys.sorted() { #expect(new[key] == old[key], "\(key)") }
    // And what they show is the intended network, not only the same one.
    #expect(new["host link"]?.contains("mtu 65535") == true && new["host link"]?.contains(",UP,") == true, "\(new["host link"] ?? "")")
    #expect(new["host addresses"]?.contains("inet HOST/30 scope global oshXh") == true)
    #expect(new["sandbox links"]?.contains("oshXs@ifN: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 65535") == true)
    #expect(new["sandbox links"]?.contains("lo: <LOOPBACK,UP,LOWER_UP>") == true)
    #expect(new["sandbox addresses"]?.contains("inet SANDBOX/30 scope global oshXs") == true)
    #expect(new["sandbox routes"]?.contains("default via HOST dev oshXs") == true)
    let rules = new["sandbox rules"] ?? ""
    for line in [
      "policy drop;", #"oifname "lo" accept"#, "ip daddr HOST tcp dport \(SandboxProtocol.proxyPort) accept",
      "ct state established,related accept", "meta l4proto tcp reject with tcp reset", "reject with icmpx admin-prohibited",
    ] {
      #expect(rules.contains(line), "\(line) in \(rules)")
    }
    #expect(FileManager.default.contents(atPath: root + "/" + id + "/nftables.conf") == Data(SandboxNetworks.ruleset(a).utf8))

    networks.tearDown(id)
    #expect(!FileManager.default.fileExists(atPath: networks.namespaceFile(id)))
    #expect(!(try Self.output(Self.ip, ["netns", "list"]).contains(ns)))
    try await Self.waitGone(a.hostInterface)
    #expect(!Self.linkExists(a.hostInterface))
  }

  @Test("a taken subnet index moves the claim to the next; a failing ruleset leaves no namespace and no veth behind")
  func takenIndexAndFailure() async throws {
    let (root, id) = try Self.sandboxDirectory()
    defer { try? FileManager.default.removeItem(atPath: root) }
    let networks = SandboxNetworks(sandboxesDirectory: root)
    // The recorded index is tried first; another interface holds its name.
    let taken = Self.freeIndex(from: 9000 + Int(getpid() % 4000), count: 2)
    try JSONEncoder().encode(SandboxNetworks.Allocation(index: taken)).write(to: URL(fileURLWithPath: root + "/" + id + "/network.json"))
    _ = try Self.output(Self.ip, ["link", "add", "osh\(taken)h", "type", "veth", "peer", "name", "nsutest\(getpid() % 100_000)"])
    defer { _ = try? Self.output(Self.ip, ["link", "del", "osh\(taken)h"]) }
    let a = try networks.setUp(id)
    #expect(a.index == taken + 1)
    #expect(Self.linkExists(a.hostInterface))
    let recorded = try JSONDecoder().decode(SandboxNetworks.Allocation.self, from: Data(contentsOf: URL(fileURLWithPath: root + "/" + id + "/network.json")))
    #expect(recorded == a)

    // A ruleset libnftables refuses: the set-up fails naming the step and nft's reason, and the namespace (and
    // so the veth pair it made) is gone, the earlier one with it (each set-up replaces the sandbox's namespace).
    let error = #expect(throws: SpawnError.self) {
      try networks.setUp(id) { _ in "table inet openshell { chain output { type filter hook output priority filter; bogus; } }\n" }
    }
    let message = error?.message ?? ""
    #expect(message.hasPrefix("cannot load the nftables ruleset into \(networks.namespaceName(id)): "), "\(message)")
    #expect(message.contains("syntax error"), "\(message)")
    #expect(!FileManager.default.fileExists(atPath: networks.namespaceFile(id)))
    // The failed set-up's claim (the earlier pair may still be going away asynchronously when it was made).
    let failed = try JSONDecoder().decode(SandboxNetworks.Allocation.self, from: Data(contentsOf: URL(fileURLWithPath: root + "/" + id + "/network.json")))
    for link in [a.hostInterface, failed.hostInterface] {
      try await Self.waitGone(link)
      #expect(!Self.linkExists(link), "\(link)")
    }
    #expect(Self.linkExists("osh\(taken)h"))  // what was not this set-up's is left alone
  }

  @Test("a namespace file that exists is an error and is left alone, as with ip netns add")
  func existingFile() throws {
    let name = "openshell-netsetup-exists-\(getpid())"
    let path = NetworkNamespace.directory + "/" + name
    #expect(FileManager.default.createFile(atPath: path, contents: Data("not mine".utf8)))
    defer { try? FileManager.default.removeItem(atPath: path) }
    let error = #expect(throws: SpawnError.self) { _ = try NetworkNamespace(creating: name) }
    #expect(error?.message == "create \(path): File exists")
    #expect(FileManager.default.contents(atPath: path) == Data("not mine".utf8))
    // A name that is no file name is refused before anything is made.
    #expect(throws: SpawnError.self) { _ = try NetworkNamespace(creating: "../escape") }
    #expect(!FileManager.default.fileExists(atPath: NetworkNamespace.directory + "/../escape"))
  }
}
