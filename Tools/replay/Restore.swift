import ArgumentParser
import EventLog
import Foundation
import Gateway
import LogTools
import Projections

#if canImport(Glibc)
  import Glibc
#endif

/// `openshell-replay restore ARCHIVE --gateway N`: rebuild a stopped local gateway's state from an
/// archived data dir (`…/archive/<name>/<ts>/`), a log directory, or an exported archive file.
///
/// - The gateway must be stopped (its pid file names no live daemon and its log's writer lock is free).
/// - The archive's records are re-appended, with their original timestamps and checked hash chain, into
///   a new log that replaces `<data dir>/log`. The gateway's previous log is moved (never deleted) to
///   `$XDG_STATE_HOME/openshell/archive/<name>/<UTC ts>-before-restore/`.
/// - Sandboxes the restored gateway cannot resume (any not stopped, failed or completed: their processes
///   are gone) get a `sandbox.failed` event with reason `NotResumedAfterRestore`; none is dropped.
/// - Sandbox processes still running from the replaced log are ended (``SandboxReaper``); the restored
///   sandboxes' workspaces are copied back from an archived data dir (`sandboxes/<id>/workspace`).
/// - Provider credentials: the archived data dir's `keys/` data keys are re-wrapped under this gateway's
///   master key (``SecretVault/importDataKeys(fromVaultAt:)``), so restored providers keep working; the
///   replaced log's `keys/` are copied into its archive. An exported archive file carries no key material:
///   providers with credentials are then named in a warning (they must be re-created).
/// - The restore itself is an event (`gateway.restored`: the gateway name, the archive, the records taken,
///   the sandboxes marked failed and those of the replaced log that the archive lacks, which are dropped and
///   printed). The gateway records its current certificates at its next start.
/// - PKI: the gateway's **current** `pki/` is kept, so clients holding its current bundle keep working.
///   Only when the data dir has no PKI yet (restoring into a new gateway) is the archived data dir's
///   `pki/` copied (its CA then comes back).
struct Restore: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Rebuild a stopped gateway's state from an archived data dir, log dir or exported archive.")
  @Argument(help: "Archived data dir, log dir, or archive file from 'export'.") var archive: String
  @Option(help: "Gateway name.") var gateway: String
  @Option(help: "The gateway's data dir (default: from its registration, else $XDG_STATE_HOME/openshell/gateways/<name>).")
  var dataDir: String?
  /// Set by `openshell gateway start --restore-from`, which starts the gateway itself afterwards: the last
  /// line then says so instead of naming that command as the next step.
  @Flag(help: .hidden) var startedByGatewayStart = false

  func run() throws {
    try LogTools_run {
      do { try restore() } catch let e as ValidationError { throw LogArchive.ArchiveError(message: e.message) }
    }
  }

  private func restore() throws {
    let fm = FileManager.default
    let configHome = UserDirectories.configHome.path
    let stateHome = UserDirectories.stateHome.path
    let safe = String(gateway.map { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) ? $0 : "_" })
    var dir = dataDir
    if dir == nil, let data = fm.contents(atPath: "\(configHome)/openshell/gateways/\(safe)/metadata.json"),
      let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let d = obj["data_dir"] as? String
    {
      dir = d
    }
    let data = URL(fileURLWithPath: dir ?? "\(stateHome)/openshell/gateways/\(safe)").standardizedFileURL
    let source = URL(fileURLWithPath: archive).standardizedFileURL
    guard source.path != data.path, !data.path.hasPrefix(source.path + "/"), !source.path.hasPrefix(data.appendingPathComponent("log").path) else {
      throw ValidationError("the archive \(source.path) is inside the gateway's data dir; restore from an archived copy")
    }

    // 1. The gateway must be stopped.
    if let s = try? String(contentsOfFile: data.appendingPathComponent("gateway.pid").path, encoding: .utf8),
      let pid = Int32(s.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0, kill(pid, 0) == 0,
      let cmd = fm.contents(atPath: "/proc/\(pid)/cmdline"), String(decoding: cmd, as: UTF8.self).contains(data.path)
    {
      throw ValidationError("gateway '\(gateway)' is running (pid \(pid)); stop it first: openshell gateway stop --name \(gateway)")
    }
    let logDir = data.appendingPathComponent("log")
    // (Probing the writer lock, not opening the log: a damaged current log must not prevent its restore.)
    if let holder = EventLog.writerPID(directory: logDir.path) {
      throw ValidationError(
        "gateway '\(gateway)' is running (\(holder > 0 ? "pid \(holder) holds its log" : "its log is locked")); stop it first: openshell gateway stop --name \(gateway)"
      )
    }

    // 2. What the archive is.
    var isDir: ObjCBool = false
    guard fm.fileExists(atPath: source.path, isDirectory: &isDir) else { throw ValidationError("no such archive: \(source.path)") }
    var sourceLog: URL?
    var sourcePKI: URL?
    var sourceConfig: URL?
    var sourceKeys: URL?
    if isDir.boolValue {
      if fm.fileExists(atPath: source.appendingPathComponent("data.mdb").path) {
        sourceLog = source
        // An archived data dir's log/ was named: its keys/ are next to it.
        let parentKeys = source.deletingLastPathComponent().appendingPathComponent("keys")
        if fm.fileExists(atPath: parentKeys.appendingPathComponent("master.key").path) { sourceKeys = parentKeys }
      } else if fm.fileExists(atPath: source.appendingPathComponent("log/data.mdb").path) {
        sourceLog = source.appendingPathComponent("log")
        if fm.fileExists(atPath: source.appendingPathComponent("pki/ca.crt").path) { sourcePKI = source.appendingPathComponent("pki") }
        if fm.fileExists(atPath: source.appendingPathComponent("gateway.json").path) { sourceConfig = source.appendingPathComponent("gateway.json") }
        if fm.fileExists(atPath: source.appendingPathComponent("keys/master.key").path) { sourceKeys = source.appendingPathComponent("keys") }
      } else {
        throw ValidationError("\(source.path) holds no event log (expected data.mdb or log/data.mdb)")
      }
    }

    // 3. Build the new log next to the old one. A data dir made here is removed again if the restore fails
    // and it is still empty (no half-made gateway directory is left behind).
    let madeDataDir = !fm.fileExists(atPath: data.path)
    try fm.createDirectory(at: data, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    let stamp = Self.stamp()
    for name in RestoreStaging.removeAbandoned(in: data) { print("removed \(name), left by a restore that was killed") }
    let staging = data.appendingPathComponent(RestoreStaging.stagingName(pid: getpid()))
    try? fm.removeItem(at: staging)
    var exported: URL?
    defer {
      if let exported { try? fm.removeItem(at: exported) }
    }
    var failedSandboxes: [String] = []
    var dropped: [String] = []
    var restoredProviders: [(name: String, dataKeyID: String, hasCredentials: Bool)] = []
    var restoredSandboxIDs: [String] = []
    do {
      var archiveFile = source
      if let sourceLog {
        let tmp = data.appendingPathComponent(RestoreStaging.archiveName(pid: getpid()))
        let log = try openLog(sourceLog.path, readOnly: true)
        defer { log.close() }
        let result = try LogVerifier.verify(log)
        guard result.ok else {
          throw ValidationError(
            "the archived log does not verify: \((result.firstBadSeq.map { "seq \($0): " } ?? "") + (result.problem ?? "unknown problem")); "
              + "to restore the records before the damage: openshell-replay export --salvage LOG FILE, then restore FILE")
        }
        try LogArchive.export(log, to: tmp.path, overwrite: true)
        exported = tmp
        archiveFile = tmp
      }
      let head = try LogArchive.importArchive(from: archiveFile.path, into: staging.path)
      let log = try EventLog.open(directory: staging.path)
      defer { log.close() }
      let state = try StateLoader.replay(log)
      let resumable: Set<SandboxPhase> = [.stopped, .error, .completed]
      var events: [NewEvent] = []
      for s in state.sandboxes.values.sorted(by: { $0.name < $1.name }) where !resumable.contains(s.phase) {
        failedSandboxes.append("\(s.workspace)/\(s.name)")
        let e = GatewayEvent(
          .sandboxFailed(
            .with {
              $0.id = s.id
              $0.reason = "NotResumedAfterRestore"
              $0.message =
                "restored from archive \(source.lastPathComponent) at seq \(head) while \(s.phase.name); its processes did not survive, delete or recreate it"
            }))
        events.append(e.newEvent(actor: "openshell-replay restore", requestID: "restore-\(stamp)"))
      }
      // Sandboxes of the log being replaced that the archive does not have are dropped: say which.
      dropped = Self.sandboxes(ofLogAt: logDir.path, excluding: Set(state.sandboxes.keys))
      events.append(
        GatewayEvent(
          .gatewayRestored(
            .with {
              $0.gatewayName = gateway
              $0.source = source.path
              $0.records = head
              $0.droppedSandboxes = dropped
              $0.failedSandboxes = failedSandboxes
            })
        ).newEvent(actor: "openshell-replay restore", requestID: "restore-\(stamp)"))
      _ = try log.appendSync(events)
      restoredSandboxIDs = state.sandboxes.keys.sorted()
      restoredProviders = state.providers.values.sorted { $0.name < $1.name }.map { ($0.name, $0.dataKeyID, !$0.credentials.isEmpty) }
      print(
        "restored \(head) records from \(source.path) (\(state.sandboxes.count) sandboxes, \(state.workspaces.count) workspaces, \(state.providers.count) providers)"
      )
    } catch {
      try? fm.removeItem(at: staging)
      if let exported { try? fm.removeItem(at: exported) }
      if madeDataDir, (try? fm.contentsOfDirectory(atPath: data.path))?.isEmpty == true { try? fm.removeItem(at: data) }
      throw error
    }

    // 4. Swap it in; the previous log is archived, never deleted.
    // The replaced log's sandboxes may still run (supervisors outlive a stopped gateway); the restored
    // state does not know them, so they are ended instead of retrying until their orphan timeout.
    let ended = SandboxReaper.terminateAll(dataDirectory: data.path)
    if ended > 0 { print("ended \(ended) sandbox process\(ended == 1 ? "" : "es") of the replaced log") }
    if fm.fileExists(atPath: logDir.path) {
      let archiveRoot = URL(fileURLWithPath: "\(stateHome)/openshell/archive/\(safe)")
      try fm.createDirectory(at: archiveRoot, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
      var previous = archiveRoot.appendingPathComponent("\(stamp)-before-restore")
      var n = 1
      while fm.fileExists(atPath: previous.path) {
        n += 1
        previous = archiveRoot.appendingPathComponent("\(stamp)-before-restore-\(n)")
      }
      try fm.createDirectory(at: previous, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
      guard rename(logDir.path, previous.appendingPathComponent("log").path) == 0 else {
        let reason = String(cString: strerror(errno))
        try? fm.removeItem(at: staging)
        throw ValidationError("cannot move the current log aside: \(reason)")
      }
      // Its credentials stay readable there: a copy of the key material goes along (the restored gateway's
      // start-up shreds data keys its own log does not use).
      let keys = data.appendingPathComponent("keys")
      if fm.fileExists(atPath: keys.path) { try? fm.copyItem(at: keys, to: previous.appendingPathComponent("keys")) }
      // So do its sandboxes' directories (workspaces): the restored gateway would remove them as orphans.
      let sandboxes = data.appendingPathComponent("sandboxes")
      let keep = Set(restoredSandboxIDs)
      for id in ((try? fm.contentsOfDirectory(atPath: sandboxes.path)) ?? []).sorted() where !keep.contains(id) {
        try? fm.createDirectory(at: previous.appendingPathComponent("sandboxes"), withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        _ = rename(sandboxes.appendingPathComponent(id).path, previous.appendingPathComponent("sandboxes").appendingPathComponent(id).path)
      }
      print("previous log archived to \(previous.appendingPathComponent("log").path)")
    }
    guard rename(staging.path, logDir.path) == 0 else {
      throw ValidationError("cannot install the restored log: \(String(cString: strerror(errno))) (it is in \(staging.path))")
    }
    let pkiDir = data.appendingPathComponent("pki")
    if fm.fileExists(atPath: pkiDir.appendingPathComponent("ca.crt").path) {
      print("PKI: kept the gateway's current certificates (\(pkiDir.path))")
    } else if let sourcePKI {
      try fm.copyItem(at: sourcePKI, to: pkiDir)
      print("PKI: restored the archived certificates (the archived CA is back)")
    } else {
      print("PKI: none yet; a new CA is created at start")
    }
    // Sandbox workspaces: an archived data dir still holds them; copies (owners and modes kept) come back
    // for the restored sandboxes whose workspace this data dir does not have.
    var workspaces = 0
    if let sourceLog {
      let sourceSandboxes = sourceLog.deletingLastPathComponent().appendingPathComponent("sandboxes")
      for id in restoredSandboxIDs {
        let from = sourceSandboxes.appendingPathComponent(id).appendingPathComponent("workspace")
        let toDir = data.appendingPathComponent("sandboxes").appendingPathComponent(id)
        let to = toDir.appendingPathComponent("workspace")
        guard fm.fileExists(atPath: from.path), !fm.fileExists(atPath: to.path) else { continue }
        try fm.createDirectory(at: toDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let cp = Process()
        cp.executableURL = URL(fileURLWithPath: "/bin/cp")
        cp.arguments = ["-a", "--", from.path, to.path]
        try cp.run()
        cp.waitUntilExit()
        guard cp.terminationStatus == 0 else { throw ValidationError("cannot copy the workspace of sandbox \(id) from \(from.path)") }
        workspaces += 1
      }
    }
    if workspaces > 0 { print("workspaces: \(workspaces) sandbox workspace\(workspaces == 1 ? "" : "s") copied from the archive") }
    // Provider credentials: the archive's data keys are re-wrapped under this gateway's master key.
    let vault = try SecretVault(directory: data.appendingPathComponent("keys").path)
    if let sourceKeys {
      let imported = try vault.importDataKeys(fromVaultAt: sourceKeys.path)
      print("keys: \(imported.count) data key\(imported.count == 1 ? "" : "s") (provider credentials, sandbox environments) imported from \(sourceKeys.path)")
    }
    let unreadable = restoredProviders.filter { $0.hasCredentials && !vault.hasDataKey($0.dataKeyID) }.map(\.name)
    if !unreadable.isEmpty {
      FileHandle.standardError.write(
        Data(
          ("warning: the credentials of provider\(unreadable.count == 1 ? "" : "s") \(unreadable.joined(separator: ", ")) cannot be decrypted: "
            + "the archive has no key material (keys/ of an archived data dir); re-create \(unreadable.count == 1 ? "it" : "them") after the start\n").utf8))
    }
    if let sourceConfig, !fm.fileExists(atPath: data.appendingPathComponent("gateway.json").path) {
      try fm.copyItem(at: sourceConfig, to: data.appendingPathComponent("gateway.json"))
    }
    for s in failedSandboxes { print("sandbox \(s): marked failed (NotResumedAfterRestore)") }
    for s in dropped { print("sandbox \(s): dropped (created after the archive; its directory is kept with the previous log)") }
    if startedByGatewayStart {
      print("gateway '\(gateway)' restored; starting it")
    } else {
      print("gateway '\(gateway)' restored; start it with: openshell gateway start --name \(gateway)")
    }
  }

  /// `workspace/name` of the sandboxes in the log at `path` whose ids are not in `excluding` (empty when
  /// there is no such log or it cannot be read: a damaged log being replaced names nothing).
  static func sandboxes(ofLogAt path: String, excluding: Set<String>) -> [String] {
    guard FileManager.default.fileExists(atPath: path + "/data.mdb"), let log = try? openLog(path, readOnly: true) else { return [] }
    defer { log.close() }
    guard let state = try? StateLoader.replay(log) else { return [] }
    return state.sandboxes.values.filter { !excluding.contains($0.id) }.map { "\($0.workspace)/\($0.name)" }.sorted()
  }

  static func stamp() -> String {
    let f = DateFormatter()
    f.locale = Locale(identifier: "en_US_POSIX")
    f.timeZone = TimeZone(identifier: "UTC")
    f.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
    return f.string(from: Date())
  }
}
