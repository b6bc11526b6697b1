import Foundation

/// OpenShell options this gateway cannot honour yet. They are refused with a line that says so instead of
/// being accepted and silently doing nothing (the rule: never accept silently).
///
/// - `--gpu`: OpenShell passes `/dev/nvidia*` devices into sandboxes; the local driver has no GPU
///   passthrough (and `CreateSandbox` with a GPU requirement is refused by the gateway for the same reason).
/// - `--registry-username` / `--registry-token` (and `OPENSHELL_REGISTRY_*`): credentials for pulling OCI
///   images, which only image-based drivers (podman, kubernetes) do; this gateway has neither yet.
enum Unsupported {
  static let gpu = "--gpu is not supported yet: the local driver has no GPU passthrough"
  static let registry =
    "--registry-username/--registry-token are not supported yet: they are for drivers that pull OCI images (podman, kubernetes), which this gateway does not have"

  /// - Throws: `CLIError` with one of the lines above when such an option was given.
  static func check(gpu: Bool, registryUsername: String?, registryToken: String?) throws {
    if gpu { throw CLIError(Self.gpu) }
    if registryUsername != nil || registryToken != nil { throw CLIError(Self.registry) }
  }

  /// Prints a warning (stderr) for each `OPENSHELL_REGISTRY_*` variable that is set: they are ignored.
  static func warnAboutEnvironment() {
    let env = ProcessInfo.processInfo.environment
    for k in ["OPENSHELL_REGISTRY_USERNAME", "OPENSHELL_REGISTRY_TOKEN"] where !(env[k] ?? "").isEmpty {
      FileHandle.standardError.write(Data("warning: \(k) is ignored: registry credentials are not supported yet (no image-pulling driver)\n".utf8))
    }
  }
}
