import CLogHash
import Crypto
import Foundation
import Testing

@testable import EventLog

/// The chain hash's SHA-256 (C target `CLogHash`: OpenSSL's libcrypto) against FIPS 180-4
/// vectors and swift-crypto (BoringSSL) on random two-part inputs of every length around the block
/// boundaries.
@Suite struct SHA256Tests {
  static func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

  static func ours(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: 32)
    a.withUnsafeBytes { pa in
      b.withUnsafeBytes { pb in csha256(pa.baseAddress, pa.count, pb.baseAddress, pb.count, &out) }
    }
    return out
  }

  @Test func fipsVectors() {
    #expect(Self.hex(Self.ours([], [])) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    #expect(Self.hex(Self.ours(Array("abc".utf8), [])) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    let m = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
    #expect(Self.hex(Self.ours(Array(m[..<20]), Array(m[20...]))) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
  }

  @Test func agreesWithSwiftCryptoOnRandomInputs() {
    var rng = CRCTests.SplitMix(seed: 42)
    for _ in 0..<1500 {
      let a = (0..<Int(rng.next() % 200)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
      let b = (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
      #expect(Self.ours(a, b) == Array(SHA256.hash(data: a + b)), "lengths \(a.count) + \(b.count)")
    }
  }

  /// The chain hash of a record, computed by ChainHasher, equals SHA-256 over the documented input.
  @Test func chainHashMatchesDocumentedInput() {
    let prev = [UInt8](repeating: 7, count: 32)
    let payload: [UInt8] = Array("payload bytes".utf8)
    var input = prev
    input.appendBE(UInt64(42))
    input.appendBE(UInt64(1_700_000_000_000_000_000))
    input.appendBE(UInt16(1))
    for s in ["sandbox.requested", "sandbox", "id-1", "alice", "req-9"] {
      input.appendBE(UInt32(s.utf8.count))
      input += Array(s.utf8)
    }
    input.appendBE(UInt64(payload.count))
    input += payload
    let got = payload.withUnsafeBytes {
      RecordFormat.chainHash(
        previousHash: prev, seq: 42, timestampNs: 1_700_000_000_000_000_000, payloadVersion: 1,
        type: "sandbox.requested", kind: "sandbox", id: "id-1", actor: "alice", requestID: "req-9", payload: $0)
    }
    #expect(got == Array(SHA256.hash(data: input)))
  }
}
