import Foundation

/// How this machine reaches a gateway deployed with `gateway start --remote` (the `ssh` member of
/// `metadata.json`; absent for every other registration). OpenShell's own fields `is_remote`,
/// `remote_host` (the SSH destination) and `resolved_host` (from `ssh -G`) are set as well.
struct RemoteSSH: Codable, Equatable {
  /// The SSH destination as given to `--remote` (`user@host` or a `~/.ssh/config` alias).
  var destination: String
  /// `--ssh-key` (absolute path on this machine), nil: ssh's own choice (agent, config, defaults).
  var identity_file: String?
  /// `$OPENSHELL_SSH_CONFIG` at deploy time (`ssh -F`), nil: `~/.ssh/config`.
  var config_file: String?
  /// The installed `openshell` on the host (absolute path), used for stop, destroy and doctor.
  var openshell_path: String
  /// The installed bundle's version (``RemoteInstall``).
  var version: String
  /// The daemon's listen address on the host: `0.0.0.0`, or `127.0.0.1` with `--tunnel`.
  var bind_address: String
  /// True when the endpoint is the CLI-managed SSH tunnel (``GatewayTunnel``).
  var tunnel: Bool
  /// The tunnel's local port (its endpoint is `https://127.0.0.1:<port>`).
  var tunnel_local_port: Int?

  func connection() throws -> SSHConnection {
    try SSHConnection(destination: destination, identityFile: identity_file, configFile: config_file)
  }
}

/// What the installed `openshell gateway bundle` prints on the host: the client bundle and the
/// daemon's settings (JSON on stdout, private key included: read only over SSH by the same user).
struct RemoteBundle: Codable {
  var name: String
  var port: Int
  var bind: String
  var auth_mode: String
  var ca: String
  var cert: String
  var key: String
  var data_dir: String
  var log_file: String
  var pid: Int32?
}
