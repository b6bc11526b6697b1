import Foundation
import LogTools
import SandboxProtocol

#if canImport(Glibc)
  import Glibc
#endif

/// `gateways/<name>/metadata.json`: the fields the OpenShell CLI and the Python SDK read
/// (openshell-behavior.md §2.1, wire-contract.md §7) plus our own (`type`, `data_dir`,
/// `ca_fingerprint`, …). Optional fields are omitted when nil.
struct GatewayMetadata: Codable, Equatable {
  var name: String
  var gateway_endpoint: String
  var is_remote: Bool
  var gateway_port: Int
  /// `mtls` | `tls` (server TLS, no client certificate) | `plaintext` | later `cloudflare_jwt` / `oidc`.
  var auth_mode: String
  /// `local` (started by this CLI, data dir on this machine) | `remote` | `cloud`.
  var type: String
  var remote_host: String?
  var resolved_host: String?
  /// Local gateways: the daemon's data directory.
  var data_dir: String?
  /// Lower-case hex SHA-256 of the stored `mtls/ca.crt` (DER).
  var ca_fingerprint: String?
  var bind_address: String?
  var gpu: Bool?
  var registry_username: String?
  /// SHA-256 (hex) of the registry token; the token itself is never stored here.
  var registry_token_sha256: String?
  var created_at: String?
  var updated_at: String?
  /// OIDC gateways (`auth_mode: "oidc"`, issue 13): the fields the openshell SDK reads to log in and
  /// refresh (`SandboxClient.from_active_cluster`, `ClientCredentialsAuth`).
  var oidc_issuer: String?
  var oidc_client_id: String?
  var oidc_audience: String?
  var oidc_scopes: String?
  /// Gateways deployed with `gateway start --remote`: how to reach the host over SSH.
  var ssh: RemoteSSH?
}

/// The client registry under `$XDG_CONFIG_HOME/openshell` (default `~/.config/openshell`), mode 0700.
///
/// Layout: `active_gateway` (name, no newline), `gateways/<name>/metadata.json`,
/// `gateways/<name>/mtls/{ca.crt,tls.crt,tls.key}` (key 0600). A gateway's directory is replaced as a
/// whole: the new one is written to `gateways/.<name>.tmp-<pid>/`, then renamed into place (the old
/// one is renamed aside first and removed afterwards), so readers see the old or the new bundle, never
/// a mix. Other files in the old directory (`last_sandbox`, `edge_token`) are carried over.
struct ClientRegistry {
  let root: URL

  static func configHome() -> URL { UserDirectories.configHome }

  static var `default`: ClientRegistry { ClientRegistry(root: configHome().appendingPathComponent("openshell")) }

  var gatewaysDir: URL { root.appendingPathComponent("gateways") }
  func gatewayDir(_ name: String) -> URL { gatewaysDir.appendingPathComponent(Self.sanitize(name)) }
  func mtlsDir(_ name: String) -> URL { gatewayDir(name).appendingPathComponent("mtls") }
  var activeFile: URL { root.appendingPathComponent("active_gateway") }

  /// Characters outside `[A-Za-z0-9._-]` become `_` (as OpenShell does for TLS directories).
  static func sanitize(_ name: String) -> String {
    String(name.map { c in c.isASCII && (c.isLetter || c.isNumber || c == "." || c == "_" || c == "-") ? c : "_" })
  }

  static func validateName(_ name: String) throws {
    guard !name.isEmpty, name.count <= 63, sanitize(name) == name, !name.hasPrefix(".") else {
      throw CLIError("invalid gateway name '\(name)': use 1-63 characters from A-Z a-z 0-9 . _ - (not starting with '.')")
    }
  }

  // MARK: reading

  func metadata(_ name: String) -> GatewayMetadata? {
    let url = gatewayDir(name).appendingPathComponent("metadata.json")
    guard let data = try? Data(contentsOf: url) else { return nil }
    return try? JSONDecoder().decode(GatewayMetadata.self, from: data)
  }

  /// All registered gateways (those whose metadata.json parses), sorted by name.
  /// The error for a gateway name nothing is registered under: names the registered ones (a typo is the
  /// usual cause) before the command that would deploy a new gateway under that name.
  func unknownGateway(_ name: String) -> CLIError {
    let known = all().map(\.name).sorted()
    let listing = known.isEmpty ? "no gateway is registered" : "registered: \(known.joined(separator: ", "))"
    return CLIError("unknown gateway '\(name)' (\(listing)); to deploy a new gateway under that name: openshell gateway start --name \(name)")
  }

  func all() -> [GatewayMetadata] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: gatewaysDir.path)) ?? []
    return names.filter { !$0.hasPrefix(".") }.sorted().compactMap { metadata($0) }
  }

  var active: String? {
    guard let s = try? String(contentsOf: activeFile, encoding: .utf8) else { return nil }
    let t = s.trimmingCharacters(in: .whitespacesAndNewlines)
    return t.isEmpty ? nil : t
  }

  // MARK: writing

  /// TLS material to store with a registration (PEM strings). nil members are not written.
  struct Bundle {
    var ca: String?
    var cert: String?
    var key: String?
    var isEmpty: Bool { ca == nil && cert == nil && key == nil }
  }

  /// Atomically writes (or replaces) the registration of `meta.name`, with `secrets` (file name → content,
  /// written mode 0600 in the same directory, e.g. `oidc_token.json`) in the same atomic replacement.
  func write(_ meta: GatewayMetadata, bundle: Bundle, secrets: [String: Data] = [:]) throws {
    let fm = FileManager.default
    try ensureDir(root)
    try ensureDir(gatewaysDir)
    let name = Self.sanitize(meta.name)
    let final = gatewayDir(meta.name)
    let tmp = gatewaysDir.appendingPathComponent(".\(name).tmp-\(getpid())")
    let old = gatewaysDir.appendingPathComponent(".\(name).old-\(getpid())")
    try? fm.removeItem(at: tmp)
    try? fm.removeItem(at: old)
    do {
      try ensureDir(tmp)
      let enc = JSONEncoder()
      enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
      try writeFile(tmp.appendingPathComponent("metadata.json"), enc.encode(meta), mode: 0o600)
      if !bundle.isEmpty {
        let m = tmp.appendingPathComponent("mtls")
        try ensureDir(m)
        if let ca = bundle.ca { try writeFile(m.appendingPathComponent("ca.crt"), Data(ca.utf8), mode: 0o644) }
        if let cert = bundle.cert { try writeFile(m.appendingPathComponent("tls.crt"), Data(cert.utf8), mode: 0o644) }
        if let key = bundle.key { try writeFile(m.appendingPathComponent("tls.key"), Data(key.utf8), mode: 0o600) }
      }
      for (file, content) in secrets { try writeFile(tmp.appendingPathComponent(file), content, mode: 0o600) }
      // Carry over files we do not own (last_sandbox, edge_token, …).
      if let items = try? fm.contentsOfDirectory(atPath: final.path) {
        for item in items where !["metadata.json", "mtls", "mtls.bak", "mtls.tmp"].contains(item) && secrets[item] == nil {
          try? fm.copyItem(at: final.appendingPathComponent(item), to: tmp.appendingPathComponent(item))
        }
      }
      fsyncDir(tmp)
      if fm.fileExists(atPath: final.path) {
        guard rename(final.path, old.path) == 0 else { throw CLIError("cannot replace \(final.path): \(errnoString())") }
        guard rename(tmp.path, final.path) == 0 else {
          let reason = errnoString()
          _ = rename(old.path, final.path)
          throw CLIError("cannot replace \(final.path): \(reason)")
        }
        try? fm.removeItem(at: old)
      } else {
        guard rename(tmp.path, final.path) == 0 else { throw CLIError("cannot write \(final.path): \(errnoString())") }
      }
      fsyncDir(gatewaysDir)
    } catch {
      try? fm.removeItem(at: tmp)
      throw error
    }
  }

  /// Removes the registration: metadata.json and the mTLS bundle go to `<root>/removed/<name>-<ts>/`
  /// (never silently deleted), the active gateway is cleared if it named `name`.
  func remove(_ name: String) throws {
    let fm = FileManager.default
    let dir = gatewayDir(name)
    guard fm.fileExists(atPath: dir.path) else { return }
    // Credentials are deleted, not archived: a removed registration must not keep a usable token.
    for secret in [OIDCTokenBundle.fileName, "edge_token"] { unlink(dir.appendingPathComponent(secret).path) }
    let removed = root.appendingPathComponent("removed")
    try ensureDir(removed)
    let dest = removed.appendingPathComponent("\(Self.sanitize(name))-\(utcStamp())-\(getpid())")
    guard rename(dir.path, dest.path) == 0 else { throw CLIError("cannot remove registration \(dir.path): \(errnoString())") }
    if active == name { try? fm.removeItem(at: activeFile) }
  }

  /// Creates the registry's directories (0700) if needed: a start checks that it can register a gateway before
  /// it deploys one (else a gateway would run that no registration names).
  /// - Throws: the file error, e.g. "cannot write …/.config/openshell: Not a directory".
  func prepare() throws { try ensureDir(gatewaysDir) }

  func setActive(_ name: String) throws {
    try ensureDir(root)
    try writeFile(activeFile, Data(name.utf8), mode: 0o644)
  }

  private func ensureDir(_ url: URL) throws {
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    _ = chmod(url.path, 0o700)
  }
}

/// Writes `data` to `url` through a temporary file, fsync and rename (``FileWriting``).
func writeFile(_ url: URL, _ data: Data, mode: mode_t) throws {
  do { try FileWriting.write(url.path, data, mode: mode, atomically: true, durable: true) } catch { throw CLIError("\(error)") }
}

func fsyncDir(_ url: URL) {
  let fd = open(url.path, O_RDONLY | O_DIRECTORY)
  if fd >= 0 { _ = fsync(fd); close(fd) }
}

func errnoString() -> String { String(cString: strerror(errno)) }
