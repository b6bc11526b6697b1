import Foundation
import Testing
import X509

@testable import Gateway

/// Shared helpers for the gateway PKI and transport tests.
enum GatewayTestSupport {
  /// A fresh temporary directory.
  static func temporaryDirectory(_ prefix: String = "pki") throws -> String {
    let path = NSTemporaryDirectory() + "gateway-tests-\(prefix)-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
  }

  /// File mode bits (e.g. 0o600).
  static func mode(_ path: String) throws -> Int {
    let attributes = try FileManager.default.attributesOfItem(atPath: path)
    return (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1
  }

  struct ProcessResult: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
  }

  /// Runs a system tool without blocking the Swift concurrency pool.
  static func run(_ tool: String, _ arguments: [String], stdin: String? = nil) async throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: tool)
    process.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    let input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    let status: Int32 = try await withCheckedThrowingContinuation { continuation in
      process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
      do {
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try? input.fileHandleForWriting.close()
      } catch {
        continuation.resume(throwing: error)
      }
    }
    let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    return ProcessResult(status: status, stdout: stdout, stderr: stderr)
  }
}

@Suite("Gateway PKI")
struct PKITests {
  @Test("first start creates CA, server and operator certificates with private keys 0600")
  func createsFiles() throws {
    let dir = try GatewayTestSupport.temporaryDirectory() + "/pki"
    let pki = try GatewayPKI.loadOrCreate(directory: dir, gatewayHosts: ["gw.example.com", "10.1.2.3"])
    #expect(try GatewayTestSupport.mode(dir) == 0o700)
    for key in ["ca.key", "server.key", "client.key"] {
      #expect(try GatewayTestSupport.mode(dir + "/" + key) == 0o600, "\(key)")
      // A PKCS#8 PEM key that parses, and belongs to the certificate of the same name.
      let privateKey = try Certificate.PrivateKey(pemEncoded: String(contentsOfFile: dir + "/" + key, encoding: .utf8))
      let cert = try Certificate(pemEncoded: String(contentsOfFile: dir + "/" + key.replacingOccurrences(of: ".key", with: ".crt"), encoding: .utf8))
      #expect(privateKey.publicKey == cert.publicKey, "\(key)")
    }
    for cert in ["ca.crt", "server.crt", "client.crt"] {
      #expect(try String(contentsOfFile: dir + "/" + cert, encoding: .utf8).hasPrefix("-----BEGIN CERTIFICATE-----"))
    }
    #expect(pki.issuedThisStart.map(\.role) == [.certificateAuthority, .server, .operator])
    #expect(pki.caFingerprint.count == 64)
    #expect(pki.issuedThisStart[0].fingerprintSHA256 == pki.caFingerprint)
    #expect(pki.issuedThisStart[0].subject == "CN=openshell-gateway-ca,O=openshell")
    #expect(pki.issuedThisStart[2].subject == "CN=openshell-operator,OU=operator,O=openshell")

    let sans = pki.issuedThisStart[1].subjectAlternativeNames
    for expected in ["DNS:localhost", "IP:127.0.0.1", "IP:::1", "DNS:gw.example.com", "IP:10.1.2.3"] {
      #expect(sans.contains(expected), "missing \(expected) in \(sans)")
    }
    if let host = HostAddress.machineHostName() {
      #expect(sans.contains("DNS:\(host.lowercased())") || sans.contains("IP:\(host)"))
    }
  }

  @Test("validity: CA 10 years, leaves 825 days, not-before 5 minutes in the past")
  func validity() throws {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let pki = try GatewayPKI.loadOrCreate(
      directory: try GatewayTestSupport.temporaryDirectory(), gatewayHosts: [], now: now)
    let byRole = Dictionary(uniqueKeysWithValues: pki.issuedThisStart.map { ($0.role, $0) })
    #expect(byRole[.certificateAuthority]?.notBefore == now - 300)
    #expect(byRole[.certificateAuthority]?.notAfter == now + 3650 * 86_400)
    #expect(byRole[.server]?.notAfter == now + 825 * 86_400)
    #expect(byRole[.operator]?.notAfter == now + 825 * 86_400)
    let sandbox = try pki.issueSandboxCertificate(sandboxID: "sb-1", now: now)
    #expect(sandbox.issuance.notAfter == now + 30 * 86_400)
    #expect(sandbox.issuance.notBefore == now - 300)
  }

  @Test("restart reuses the CA; a new gateway host re-issues only the server certificate")
  func restartAndReissue() throws {
    let dir = try GatewayTestSupport.temporaryDirectory()
    let first = try GatewayPKI.loadOrCreate(directory: dir, gatewayHosts: ["a.example"])
    let second = try GatewayPKI.loadOrCreate(directory: dir, gatewayHosts: ["a.example"])
    #expect(second.caFingerprint == first.caFingerprint)
    #expect(second.issuedThisStart.isEmpty)
    let clientBefore = try String(contentsOfFile: dir + "/client.crt", encoding: .utf8)

    let third = try GatewayPKI.loadOrCreate(directory: dir, gatewayHosts: ["a.example", "192.168.7.9", "b.example"])
    #expect(third.caFingerprint == first.caFingerprint)
    #expect(third.issuedThisStart.map(\.role) == [.server])
    #expect(third.issuedThisStart[0].subjectAlternativeNames.contains("IP:192.168.7.9"))
    #expect(third.issuedThisStart[0].subjectAlternativeNames.contains("DNS:b.example"))
    #expect(try String(contentsOfFile: dir + "/client.crt", encoding: .utf8) == clientBefore)

    // Leaves close to expiry are renewed from the same CA.
    let later = Date().addingTimeInterval(820 * 86_400)
    let renewed = try GatewayPKI.loadOrCreate(directory: dir, gatewayHosts: [], now: later)
    #expect(Set(renewed.issuedThisStart.map(\.role)) == [.server, .operator])
    #expect(renewed.caFingerprint == first.caFingerprint)
  }

  @Test("a CA certificate without its key is an error, not a silent new CA")
  func incompleteCA() throws {
    let dir = try GatewayTestSupport.temporaryDirectory()
    _ = try GatewayPKI.loadOrCreate(directory: dir, gatewayHosts: [])
    try FileManager.default.removeItem(atPath: dir + "/ca.key")
    #expect(throws: GatewayPKIError.incompleteCA(directory: dir)) {
      try GatewayPKI.loadOrCreate(directory: dir, gatewayHosts: [])
    }
  }

  @Test("sandbox certificates: OU=sandbox, CN=sandbox:<id>, identity .sandbox; bad ids rejected")
  func sandboxCertificate() throws {
    let pki = try GatewayPKI.loadOrCreate(directory: try GatewayTestSupport.temporaryDirectory(), gatewayHosts: [])
    let issued = try pki.issueSandboxCertificate(sandboxID: "my-sandbox_01")
    #expect(issued.issuance.role == .sandbox)
    #expect(issued.issuance.subject == "CN=sandbox:my-sandbox_01,OU=sandbox,O=openshell")
    let certificate = try Certificate(pemEncoded: issued.certificatePEM)
    #expect(try Certificate.PrivateKey(pemEncoded: issued.privateKeyPEM).publicKey == certificate.publicKey)
    let identity = CallerIdentity(verifiedClientCertificate: certificate)
    #expect(identity.kind == .sandbox(id: "my-sandbox_01"))
    #expect(identity.actor == "sandbox:my-sandbox_01")
    #expect(identity.fingerprint == issued.issuance.fingerprintSHA256)
    #expect(try certificate.extensions.extendedKeyUsage?.contains(.clientAuth) == true)
    #expect(throws: GatewayPKIError.self) { try pki.issueSandboxCertificate(sandboxID: "bad/id") }
    #expect(throws: GatewayPKIError.self) { try pki.issueSandboxCertificate(sandboxID: "") }

    let operatorCert = try Certificate(pemEncoded: String(contentsOfFile: pki.clientCertificatePath, encoding: .utf8))
    let operatorIdentity = CallerIdentity(verifiedClientCertificate: operatorCert)
    #expect(operatorIdentity.kind == .operator)
    #expect(operatorIdentity.actor.hasPrefix("operator:CN=openshell-operator/sha256:"))
  }

  @Test("openssl verifies the server, operator and sandbox certificates against ca.crt")
  func opensslVerify() async throws {
    let dir = try GatewayTestSupport.temporaryDirectory()
    let pki = try GatewayPKI.loadOrCreate(directory: dir, gatewayHosts: [])
    let sandboxPath = dir + "/sandbox.crt"
    try pki.issueSandboxCertificate(sandboxID: "s1").certificatePEM.write(
      toFile: sandboxPath, atomically: true, encoding: .utf8)
    let result = try await GatewayTestSupport.run(
      "/usr/bin/openssl",
      ["verify", "-CAfile", pki.caCertificatePath, pki.serverCertificatePath, pki.clientCertificatePath, sandboxPath])
    #expect(result.status == 0, "\(result.stderr)")
    #expect(result.stdout.components(separatedBy: ": OK").count == 4, "\(result.stdout)")
    let purpose = try await GatewayTestSupport.run(
      "/usr/bin/openssl", ["verify", "-purpose", "sslserver", "-CAfile", pki.caCertificatePath, pki.serverCertificatePath])
    #expect(purpose.status == 0, "\(purpose.stdout)\(purpose.stderr)")
    let text = try await GatewayTestSupport.run("/usr/bin/openssl", ["x509", "-noout", "-text", "-in", pki.serverCertificatePath])
    #expect(text.stdout.contains("DNS:localhost"))
    #expect(text.stdout.contains("IP Address:127.0.0.1"))
    #expect(text.stdout.contains("IP Address:0:0:0:0:0:0:0:1"))
    #expect(text.stdout.contains("TLS Web Server Authentication"))
  }
}
