extension AuditFastSummary {
  /// Field numbers of `GatewayEvent.kind` rendered here, and their record types (Projections/Events.swift).
  enum Kind {
    static let accessRefused = 91
    static let credentialsDisclosed = 92
    static let execStarted = 93
    static let execEnded = 94
    static let sshTunnelOpened = 82
    static let sshTunnelClosed = 83
    static let supervisorConnected = 110
    static let supervisorDisconnected = 111

    static func typeName(_ field: Int) -> String? {
      switch field {
      case accessRefused: "audit.access_refused"
      case credentialsDisclosed: "audit.credentials_disclosed"
      case execStarted: "exec.started"
      case execEnded: "exec.ended"
      case sshTunnelOpened: "ssh.tunnel_opened"
      case sshTunnelClosed: "ssh.tunnel_closed"
      case supervisorConnected: "supervisor.connected"
      case supervisorDisconnected: "supervisor.disconnected"
      case 3: "certificate.issued"
      case 10: "workspace.created"
      case 11: "workspace.deleted"
      case 15: "template.created"
      case 16: "template.deleted"
      case 20: "sandbox.requested"
      case 21: "sandbox.provisioning"
      case 22: "sandbox.ready"
      case 23: "sandbox.failed"
      case 24: "sandbox.stopping"
      case 25: "sandbox.stopped"
      case 26: "sandbox.starting"
      case 27: "sandbox.deleting"
      case 28: "sandbox.deleted"
      case 29: "sandbox.main_process_exited"
      case 30: "sandbox.condition_set"
      case 31: "sandbox.network_denials"
      case 40: "provider.created"
      case 41: "provider.updated"
      case 42: "provider.credential_rotated"
      case 43: "provider.deleted"
      case 44: "sandbox.provider_attached"
      case 45: "sandbox.provider_detached"
      case 50: "policy.revision_submitted"
      case 51: "policy.revision_loaded"
      case 52: "policy.revision_failed"
      case 53: "policy.revision_superseded"
      case 54: "policy.global_set"
      case 55: "policy.global_deleted"
      case 60: "setting.set"
      case 61: "setting.deleted"
      case 70: "inference.route_set"
      case 71: "inference.route_deleted"
      case 72: "inference.bundle_published"
      case 80: "ssh.session_created"
      case 81: "ssh.session_revoked"
      case 86: "service.exposed"
      case 87: "service.deleted"
      case 112: "audit.credentials_substituted"
      default: nil
      }
    }

    /// One of the eight audit kinds rendered since the fast path's start (the others are mutations).
    static func isAudit(_ field: Int) -> Bool {
      switch field {
      case accessRefused, credentialsDisclosed, execStarted, execEnded, sshTunnelOpened, sshTunnelClosed, supervisorConnected,
        supervisorDisconnected:
        true
      default: false
      }
    }
  }
}
