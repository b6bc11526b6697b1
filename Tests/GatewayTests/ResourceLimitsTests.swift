import Foundation
import SwiftProtobuf
import Testing

@testable import Gateway

/// Parsing of `template.resources` into cgroup limits, and the cgroup layout found from /proc/self/cgroup.
@Suite struct ResourceLimitsTests {
  static func resources(_ fields: [String: Google_Protobuf_Value]) -> Google_Protobuf_Struct {
    Google_Protobuf_Struct(fields: fields)
  }

  @Test func quantities() throws {
    func cpu(_ s: String) throws -> Int64? { try ResourceLimits.parse(Self.resources(["cpu": .init(stringValue: s)])).cpuMillicores }
    func mem(_ s: String) throws -> Int64? { try ResourceLimits.parse(Self.resources(["memory": .init(stringValue: s)])).memoryBytes }
    #expect(try cpu("2") == 2000)
    #expect(try cpu("0.5") == 500)
    #expect(try cpu("250m") == 250)
    #expect(try mem("512Mi") == 512 << 20)
    #expect(try mem("2Gi") == 2 << 30)
    #expect(try mem("1G") == 1_000_000_000)
    #expect(try mem("100000000") == 100_000_000)
    let number = try ResourceLimits.parse(Self.resources(["memory": .init(numberValue: 67_108_864)]))
    #expect(number.memoryBytes == 64 << 20)
    // Kubernetes style: limits win, requests are only validated.
    let nested = try ResourceLimits.parse(
      Self.resources([
        "limits": .init(structValue: Self.resources(["cpu": .init(stringValue: "1"), "memory": .init(stringValue: "1Gi")])),
        "requests": .init(structValue: Self.resources(["cpu": .init(stringValue: "100m")])),
      ]))
    #expect(nested == ResourceLimits(cpuMillicores: 1000, memoryBytes: 1 << 30))
  }

  @Test func badQuantitiesNameTheFieldAndTheProblem() {
    func message(_ fields: [String: Google_Protobuf_Value]) -> String? {
      do {
        _ = try ResourceLimits.parse(Self.resources(fields))
        return nil
      } catch {
        return error.message
      }
    }
    #expect(message(["memory": .init(stringValue: "1x")])?.contains("resources.memory \"1x\" is not a memory quantity") == true)
    #expect(message(["cpu": .init(stringValue: "-1")])?.contains("resources.cpu \"-1\" is not a cpu quantity") == true)
    #expect(message(["cpu": .init(stringValue: "5m")]) == "the cpu limit must be at least 10m")
    #expect(message(["memory": .init(stringValue: "1Mi")]) == "the memory limit must be at least 16Mi")
    #expect(message(["gpu": .init(stringValue: "1")])?.contains("resources.gpu is not supported") == true)
    #expect(message(["limits": .init(stringValue: "big")])?.contains("resources.limits must be an object") == true)
    #expect(message(["limits": .init(structValue: Self.resources(["disk": .init(stringValue: "1Gi")]))])?.contains("resources.limits.disk") == true)
  }

  @Test func layoutFromProcSelfCgroup() throws {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("cg-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: root) }
    // v1 (legacy): per-controller directories of our own cgroup.
    try FileManager.default.createDirectory(atPath: root + "/memory/svc/gw", withIntermediateDirectories: true)
    try FileManager.default.createDirectory(atPath: root + "/cpu/svc", withIntermediateDirectories: true)
    let v1 = try #require(SandboxCgroups.detect(mountRoot: root, selfCgroup: "4:memory:/svc/gw\n1:cpu,cpuacct:/svc\n0::/\n"))
    #expect(v1.layout == .legacy(memory: root + "/memory/svc/gw", cpu: root + "/cpu/svc"))
    #expect(v1.directories(sandboxID: "s1") == [root + "/memory/svc/gw/openshell/s1", root + "/cpu/svc/openshell/s1"])
    // A hierarchy without the cpu controller refuses a cpu limit with a reason.
    let memOnly = try #require(SandboxCgroups.detect(mountRoot: root, selfCgroup: "4:memory:/svc/gw\n"))
    #expect(memOnly.unsupported(ResourceLimits(cpuMillicores: 500)).map { $0.contains("cpu controller") } == true)
    #expect(memOnly.unsupported(ResourceLimits(memoryBytes: 64 << 20)) == nil)
    // v2 (unified): cgroup.controllers at the mount root.
    let v2root = root + "/v2"
    try FileManager.default.createDirectory(atPath: v2root + "/system.slice/gw.service", withIntermediateDirectories: true)
    FileManager.default.createFile(atPath: v2root + "/cgroup.controllers", contents: Data("cpu memory".utf8))
    let v2 = try #require(SandboxCgroups.detect(mountRoot: v2root, selfCgroup: "0::/system.slice/gw.service\n"))
    #expect(v2.layout == .unified(v2root + "/system.slice/gw.service"))
    // No hierarchy at all.
    #expect(SandboxCgroups.detect(mountRoot: root + "/none", selfCgroup: "0::/\n") == nil)
  }
}
