import EventLog
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import LogTools
import OpenShellAPI
import Projections
import Synchronization
import Testing

@testable import Gateway

/// Provider tests run against the shared in-process gateway harness (no compute driver).
typealias ProviderGateway = TestGateway

/// Every byte of every file under `dir` contains `needle`? Returns the offending paths.
func filesContaining(_ needle: String, under dir: String) -> [String] {
  let bytes = Array(needle.utf8)
  var hits: [String] = []
  guard let e = FileManager.default.enumerator(atPath: dir) else { return hits }
  while let rel = e.nextObject() as? String {
    let path = dir + "/" + rel
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue,
      let data = FileManager.default.contents(atPath: path)
    else { continue }
    if data.withUnsafeBytes({ raw in raw.firstRange(of: bytes) != nil }) { hits.append(rel) }
  }
  return hits
}

extension UnsafeRawBufferPointer {
  func firstRange(of needle: [UInt8]) -> Range<Int>? {
    guard needle.count <= count, !needle.isEmpty else { return nil }
    var i = 0
    while i + needle.count <= count {
      if self[i] == needle[0] {
        var j = 1
        while j < needle.count && self[i + j] == needle[j] { j += 1 }
        if j == needle.count { return i..<(i + needle.count) }
      }
      i += 1
    }
    return nil
  }
}

/// Every record's decompressed payload and metadata, read through the EventLog API, that contains `needle`.
func recordsContaining(_ needle: String, logDirectory: String) throws -> [UInt64] {
  let log = try EventLog.open(directory: logDirectory)
  defer { log.close() }
  let bytes = Array(needle.utf8)
  var hits: [UInt64] = []
  try log.forEach(from: 1) { r in
    let blob = r.payload + Array("\(r.actor)\u{0}\(r.requestID)\u{0}\(r.type)\u{0}\(r.aggregate)".utf8)
    if blob.withUnsafeBytes({ $0.firstRange(of: bytes) }) != nil { hits.append(r.seq) }
  }
  if let snap = try log.latestSnapshot(name: SnapshotCodec.projectionName), snap.bytes.withUnsafeBytes({ $0.firstRange(of: bytes) }) != nil {
    hits.append(0)
  }
  return hits
}

/// What fake supervisors received, per sandbox id.
final class SupervisorMessages: Sendable {
  let received = Mutex<[String: [Openshell_V1_ConfigUpdate]]>([:])
  let accepted = Mutex<Set<String>>([])
}

let providerCallOptions: CallOptions = {
  var o = CallOptions.defaults
  o.timeout = .seconds(20)
  return o
}()

@Suite(.serialized, .timeLimit(.minutes(5))) struct ProviderTests {
  @Test("CRUD: create/get/list (paginated)/update (merge, rotation, type fixed)/delete; values always REDACTED")
  func crud() async throws {
    let gw = try await ProviderGateway.start()
    let secret = "sk-canary-\(UUID().uuidString)"
    try await gw.withClient { api in
      let created = try await api.createProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "claude-main"
            $0.type = "claude"
            $0.credentials = ["ANTHROPIC_API_KEY": secret]
            $0.config = ["region": "us"]
          }
        }
      ).provider
      #expect(created.metadata.name == "claude-main")
      #expect(created.metadata.workspace == "default")
      #expect(UUID(uuidString: created.metadata.id) != nil)
      #expect(created.type == "claude")
      #expect(created.credentials == ["ANTHROPIC_API_KEY": "REDACTED"])
      #expect(created.config == ["region": "us"])

      // Aliases resolve; generated names are 6 lowercase letters.
      let gh = try await api.createProvider(
        .with {
          $0.provider = .with {
            $0.type = "gh"; $0.credentials = ["GITHUB_TOKEN": "t1"]
          }
        }
      ).provider
      #expect(gh.type == "github")
      #expect(gh.metadata.name.count == 6 && gh.metadata.name.allSatisfy { $0.isLowercase })

      // Errors.
      #expect(
        await rpcError {
          _ = try await api.createProvider(
            .with {
              $0.provider = .with {
                $0.metadata.name = "claude-main"; $0.type = "claude"; $0.credentials = ["K": "v"]
              }
            })
        }?.code == .alreadyExists)
      #expect(
        await rpcError {
          _ = try await api.createProvider(
            .with {
              $0.provider = .with {
                $0.metadata.name = "x"; $0.credentials = ["K": "v"]
              }
            })
        }?.code == .invalidArgument)
      #expect(
        await rpcError {
          _ = try await api.createProvider(
            .with {
              $0.provider = .with {
                $0.metadata.name = "x"; $0.type = "claude"
              }
            })
        }?.code == .invalidArgument)
      #expect(
        await rpcError {
          _ = try await api.createProvider(
            .with {
              $0.provider = .with {
                $0.metadata.name = "x"; $0.type = "claude"; $0.credentials = ["BAD-KEY": "v"]
              }
            })
        }?.code == .invalidArgument)
      #expect(
        await rpcError {
          _ = try await api.createProvider(
            .with {
              $0.provider = .with {
                $0.metadata.name = "Bad_Name"; $0.type = "claude"; $0.credentials = ["K": "v"]
              }
            })
        }?.code == .invalidArgument)
      // Labels are not stored yet: refused with the field named, never answered OK without them.
      let labelled = await rpcError {
        _ = try await api.createProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "lab"; $0.metadata.labels = ["team": "a"]; $0.type = "claude"; $0.credentials = ["K": "v"]
            }
          })
      }
      #expect(labelled?.code == .invalidArgument)
      #expect(labelled?.message.contains("provider labels are not supported yet (got team)") == true, "\(String(describing: labelled))")
      #expect(await rpcError { _ = try await api.getProvider(.with { $0.name = "lab" }) }?.code == .notFound)
      let relabel = await rpcError {
        _ = try await api.updateProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "claude-main"; $0.metadata.labels = ["team": "a"]
            }
          })
      }
      #expect(relabel?.code == .invalidArgument)

      let got = try await api.getProvider(.with { $0.name = "claude-main" }).provider
      #expect(got == created)
      #expect(await rpcError { _ = try await api.getProvider(.with { $0.name = "nope" }) }?.code == .notFound)

      // Pagination.
      for i in 0..<3 {
        _ = try await api.createProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "p\(i)"; $0.type = "generic"; $0.credentials = ["TOKEN": "v\(i)"]
            }
          })
      }
      var names: [String] = []
      var token = ""
      var pages = 0
      repeat {
        let page = try await api.listProviders(
          .with {
            $0.pageSize = 2; $0.pageToken = token
          })
        #expect(page.providers.count <= 2)
        #expect(page.providers.allSatisfy { $0.credentials.values.allSatisfy { $0 == "REDACTED" } })
        names += page.providers.map(\.metadata.name)
        token = page.nextPageToken
        pages += 1
      } while !token.isEmpty
      #expect(pages == 3)
      #expect(Set(names) == Set(["claude-main", gh.metadata.name, "p0", "p1", "p2"]) && names.count == 5)

      // Update: merge; an empty value deletes; a new value for an existing key is a rotation.
      let updated = try await api.updateProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "claude-main"
            $0.credentials = ["ANTHROPIC_API_KEY": secret + "-2", "CLAUDE_API_KEY": "second"]
            $0.config = ["region": "", "tier": "pro"]
          }
        }
      ).provider
      #expect(updated.credentials == ["ANTHROPIC_API_KEY": "REDACTED", "CLAUDE_API_KEY": "REDACTED"])
      #expect(updated.config == ["tier": "pro"])
      let removed = try await api.updateProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "claude-main"; $0.credentials = ["CLAUDE_API_KEY": ""]
          }
        }
      ).provider
      #expect(removed.credentials.keys.sorted() == ["ANTHROPIC_API_KEY"])
      // An empty update changes nothing.
      let same = try await api.updateProvider(.with { $0.provider = .with { $0.metadata.name = "claude-main" } }).provider
      #expect(same.metadata.resourceVersion == removed.metadata.resourceVersion)
      let typeChange = await rpcError {
        _ = try await api.updateProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "claude-main"; $0.type = "openai"
            }
          })
      }
      #expect(typeChange?.code == .invalidArgument)
      #expect(typeChange?.message.contains("provider type cannot be changed; delete and recreate the provider") == true)

      let creds = try await api.getProviderCredentials(
        .with {
          $0.name = "claude-main"; $0.credentialKeys = ["ANTHROPIC_API_KEY"]
        })
      #expect(creds.credentials.mapValues(\.value) == ["ANTHROPIC_API_KEY": secret + "-2"])

      // RotateProviderCredential: static credentials have no refresh strategy.
      let rotate = await rpcError {
        _ = try await api.rotateProviderCredential(
          .with {
            $0.provider = "claude-main"; $0.credentialKey = "ANTHROPIC_API_KEY"
          })
      }
      #expect(rotate?.code == .failedPrecondition)

      // Delete.
      #expect(try await api.deleteProvider(.with { $0.name = "p0" }).outcome == .completed)
      #expect(
        try await api.deleteProvider(
          .with {
            $0.name = "p0"; $0.allowMissing = true
          }
        ).outcome == .alreadyAbsent)
      #expect(await rpcError { _ = try await api.deleteProvider(.with { $0.name = "p0" }) }?.code == .notFound)
    }
    await gw.stop()
  }

  @Test("GetProviderCredentials: operator only, exactly the requested keys")
  func credentialsOperatorOnly() async throws {
    let gw = try await ProviderGateway.start()
    let (cert, key) = try gw.sandboxCertificate("sb-1")
    try await gw.withClient { api in
      _ = try await api.createProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "gl"; $0.type = "gitlab"; $0.credentials = ["GITLAB_TOKEN": "g1", "CI_JOB_TOKEN": "c1"]
          }
        })
      let one = try await api.getProviderCredentials(
        .with {
          $0.name = "gl"; $0.credentialKeys = ["GITLAB_TOKEN"]
        })
      #expect(one.credentials.mapValues(\.value) == ["GITLAB_TOKEN": "g1"])
      let both = try await api.getProviderCredentials(
        .with {
          $0.name = "gl"; $0.credentialKeys = ["GITLAB_TOKEN", "CI_JOB_TOKEN"]
        })
      #expect(both.credentials.mapValues(\.value) == ["GITLAB_TOKEN": "g1", "CI_JOB_TOKEN": "c1"])
      let missing = await rpcError {
        _ = try await api.getProviderCredentials(
          .with {
            $0.name = "gl"; $0.credentialKeys = ["GITLAB_TOKEN", "NOPE"]
          })
      }
      #expect(missing?.code == .notFound)
      #expect(missing?.message.contains("NOPE") == true)
      #expect(
        await rpcError {
          _ = try await api.getProviderCredentials(
            .with {
              $0.name = "gl"; $0.credentialKeys = []
            })
        }?.code == .invalidArgument)
      #expect(
        await rpcError {
          _ = try await api.getProviderCredentials(
            .with {
              $0.name = "gl"; $0.credentialKeys = ["A", "A"]
            })
        }?.code == .invalidArgument)
      #expect(
        await rpcError {
          _ = try await api.getProviderCredentials(
            .with {
              $0.name = "gl"; $0.credentialKeys = ["bad-key"]
            })
        }?.code == .invalidArgument)
    }
    // A sandbox identity is refused, for credentials and for user RPCs.
    try await gw.withClient(certificate: cert, key: key) { api in
      let e = await rpcError {
        _ = try await api.getProviderCredentials(
          .with {
            $0.name = "gl"; $0.credentialKeys = ["GITLAB_TOKEN"]
          })
      }
      #expect(e?.code == .permissionDenied)
      #expect(await rpcError { _ = try await api.getProvider(.with { $0.name = "gl" }) }?.code == .permissionDenied)
    }
    await gw.stop()
    // Without client certificates nobody is the operator.
    let tls = try await ProviderGateway.start(dataDirectory: gw.dataDirectory, security: .tls)
    try await tls.withClient { api in
      let e = await rpcError {
        _ = try await api.getProviderCredentials(
          .with {
            $0.name = "gl"; $0.credentialKeys = ["GITLAB_TOKEN"]
          })
      }
      #expect(e?.code == .permissionDenied)
    }
    await tls.stop()
  }

  @Test("sandboxes: unknown provider named; delete refused while used unless forced; environment for the own sandbox only")
  func sandboxesAndEnvironment() async throws {
    let gw = try await ProviderGateway.start()
    let result = try await gw.withClient { api -> (String, String) in
      _ = try await api.createProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "anth"; $0.type = "anthropic"; $0.credentials = ["ANTHROPIC_API_KEY": "a-1", "SHARED": "from-anth"]
          }
        })
      _ = try await api.createProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "nv"; $0.type = "nvidia"; $0.credentials = ["NVIDIA_API_KEY": "n-1", "SHARED": "from-nv"]
          }
        })
      let unknown = await rpcError {
        _ = try await api.createSandbox(
          .with {
            $0.name = "bad"; $0.spec.providers = ["anth", "ghost-provider"]
          })
      }
      #expect(unknown?.code == .failedPrecondition)
      #expect(unknown?.message.contains("ghost-provider") == true)
      let a = try await api.createSandbox(
        .with {
          $0.name = "sa"; $0.spec.providers = ["nv", "anth"]
        }
      ).sandbox
      let b = try await api.createSandbox(.with { $0.name = "sb" }).sandbox

      // Delete refused while used, naming the sandbox.
      let refused = await rpcError { _ = try await api.deleteProvider(.with { $0.name = "anth" }) }
      #expect(refused?.code == .failedPrecondition)
      #expect(refused?.message.contains("sa") == true)

      // Attach / list / detach.
      let attached = try await api.attachSandboxProvider(
        .with {
          $0.sandbox = "sb"; $0.provider = "anth"
        })
      #expect(attached.attached)
      #expect(try await api.listSandboxProviders(.with { $0.sandbox = "sb" }).providers.map(\.metadata.name) == ["anth"])
      #expect(
        await rpcError {
          _ = try await api.attachSandboxProvider(
            .with {
              $0.sandbox = "sb"; $0.provider = "nope"
            })
        }?.code == .failedPrecondition)
      let detached = try await api.detachSandboxProvider(
        .with {
          $0.sandbox = "sb"; $0.provider = "anth"
        })
      #expect(detached.detached)
      #expect(try await api.listSandboxProviders(.with { $0.sandbox = "sb" }).providers.isEmpty)
      return (a.metadata.id, b.metadata.id)
    }
    let (aID, bID) = result
    let (certA, keyA) = try gw.sandboxCertificate(aID)
    try await gw.withClient(certificate: certA, key: keyA) { api in
      let env = try await api.getSandboxProviderEnvironment(.with { $0.sandboxID = aID })
      // spec order nv, anth: the first provider wins on duplicate keys.
      #expect(env.environment == ["NVIDIA_API_KEY": "n-1", "ANTHROPIC_API_KEY": "a-1", "SHARED": "from-nv"])
      #expect(env.providerEnvRevision > 0)
      let other = await rpcError { _ = try await api.getSandboxProviderEnvironment(.with { $0.sandboxID = bID }) }
      #expect(other?.code == .permissionDenied)
    }
    // Sandbox B (no providers) gets an empty environment; the operator cannot call the sandbox RPC.
    let (certB, keyB) = try gw.sandboxCertificate(bID)
    try await gw.withClient(certificate: certB, key: keyB) { api in
      let env = try await api.getSandboxProviderEnvironment(.with { $0.sandboxID = bID })
      #expect(env.environment.isEmpty)
    }
    try await gw.withClient { api in
      #expect(await rpcError { _ = try await api.getSandboxProviderEnvironment(.with { $0.sandboxID = aID }) }?.code == .permissionDenied)
      // Forced delete (metadata x-openshell-force) detaches it from the sandboxes.
      let r = try await api.deleteProvider(.with { $0.name = "anth" }, metadata: [OpenShellService.forceDeleteHeader: "true"], options: providerCallOptions)
      #expect(r.outcome == .completed)
      #expect(try await api.listSandboxProviders(.with { $0.sandbox = "sa" }).providers.map(\.metadata.name) == ["nv"])
    }
    try await gw.withClient(certificate: certA, key: keyA) { api in
      let env = try await api.getSandboxProviderEnvironment(.with { $0.sandboxID = aID })
      #expect(env.environment == ["NVIDIA_API_KEY": "n-1", "SHARED": "from-nv"])
    }
    await gw.stop()
  }

  @Test("a rotation is pushed to the connected supervisor of a sandbox that uses the provider within 1 s")
  func rotationPushed() async throws {
    let gw = try await ProviderGateway.start()
    let ids = try await gw.withClient { api -> (String, String) in
      _ = try await api.createProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "oa"; $0.type = "openai"; $0.credentials = ["OPENAI_API_KEY": "old"]
          }
        })
      let a = try await api.createSandbox(
        .with {
          $0.name = "user"; $0.spec.providers = ["oa"]
        }
      ).sandbox.metadata.id
      let b = try await api.createSandbox(.with { $0.name = "bystander" }).sandbox.metadata.id
      return (a, b)
    }
    let seen = SupervisorMessages()
    var sessions: [Task<Void, Never>] = []
    for id in [ids.0, ids.1] {
      let (cert, key) = try gw.sandboxCertificate(id)
      sessions.append(
        Task {
          try? await gw.withClient(certificate: cert, key: key) { api in
            try await api.connectSupervisor(
              request: StreamingClientRequest { writer in
                try await writer.write(
                  .with {
                    $0.hello = .with {
                      $0.sandboxID = id; $0.instanceID = "test"
                    }
                  })
                try await Task.sleep(for: .seconds(60))
              }
            ) { response in
              for try await m in response.messages {
                switch m.payload {
                case .sessionAccepted: seen.accepted.withLock { _ = $0.insert(id) }
                case .configUpdate(let u): seen.received.withLock { $0[id, default: []].append(u) }
                default: break
                }
              }
            }
          }
        })
    }
    for _ in 0..<500 where seen.accepted.withLock({ $0.count }) < 2 { try await Task.sleep(for: .milliseconds(10)) }
    #expect(seen.accepted.withLock { $0.count } == 2)
    let started = ContinuousClock.now
    try await gw.withClient { api in
      _ = try await api.updateProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "oa"; $0.credentials = ["OPENAI_API_KEY": "new"]
          }
        })
    }
    var latency: Duration?
    for _ in 0..<200 {
      if seen.received.withLock({ $0[ids.0]?.isEmpty == false }) {
        latency = ContinuousClock.now - started
        break
      }
      try await Task.sleep(for: .milliseconds(5))
    }
    let update = try #require(seen.received.withLock { $0[ids.0]?.last })
    #expect(try #require(latency) < .seconds(1))
    #expect(update.providerEnvironment.values.map { "\($0.name)=\($0.value)" } == ["OPENAI_API_KEY=new"])
    try await Task.sleep(for: .milliseconds(100))
    #expect(seen.received.withLock { $0[ids.1] } == nil, "a sandbox that does not use the provider receives nothing")
    for s in sessions { s.cancel() }
    await gw.stop()
  }

  @Test("crypto-shredding: after delete the data key is gone; state at a past seq shows the provider, values unrecoverable")
  func cryptoShredding() async throws {
    let gw = try await ProviderGateway.start()
    let canary = "shred-canary-\(UUID().uuidString)"
    let created = try await gw.withClient { api in
      try await api.createProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "doomed"; $0.type = "generic"; $0.credentials = ["TOKEN": canary]
          }
        }
      ).provider
    }
    let pastSeq = gw.running.store.log.headSeq
    let vault = try SecretVault(directory: gw.dataDirectory + "/keys")
    let before = try #require(await gw.running.store.state.providers[created.metadata.id])
    #expect(try vault.open(before.credentials["TOKEN"]!, keyID: before.dataKeyID, name: "TOKEN") == canary)
    try await gw.withClient { api in _ = try await api.deleteProvider(.with { $0.name = "doomed" }) }
    #expect(!vault.hasDataKey(before.dataKeyID))
    await gw.stop()

    let log = try EventLog.open(directory: gw.dataDirectory + "/log")
    #expect(try LogVerifier.verify(log).ok)
    let past = try StateLoader.replay(log, through: .seq(pastSeq))
    let p = try #require(past.providers[created.metadata.id])
    #expect(p.name == "doomed")
    #expect(throws: SecretVault.VaultError.self) { try vault.open(p.credentials["TOKEN"]!, keyID: p.dataKeyID, name: "TOKEN") }
    #expect(try StateLoader.replay(log).providers[created.metadata.id] == nil)
    let audit = try Audit.timeline(
      log,
      query: {
        var q = AuditQuery(); q.provider = "doomed"; return q
      }())
    #expect(audit.map(\.type) == ["provider.created", "provider.deleted"])
    log.close()
    #expect(filesContaining(canary, under: gw.dataDirectory).isEmpty)
    #expect(try recordsContaining(canary, logDirectory: gw.dataDirectory + "/log").isEmpty)
  }

  @Test("canary: no value in any record (decompressed), snapshot, file, audit, state or error; rotation audited")
  func canary() async throws {
    let gw = try await ProviderGateway.start()
    let canary = "CANARY-\(UUID().uuidString)"
    // Positive control: a non-secret config value is found by the same searches.
    let marker = "CONFIGMARK-\(UUID().uuidString)"
    var texts: [String] = []
    let responses = try await gw.withClient { api -> [String] in
      var out: [String] = []
      out.append(
        "\(try await api.createProvider(.with { $0.provider = .with { $0.metadata.name = "cn"; $0.type = "codex"; $0.credentials = ["OPENAI_API_KEY": canary + "-1"]; $0.config = ["marker": marker] } }))"
      )
      out.append(
        "\(try await api.updateProvider(.with { $0.provider = .with { $0.metadata.name = "cn"; $0.credentials = ["OPENAI_API_KEY": canary + "-2", "EXTRA": canary + "-3"] } }))"
      )
      out.append("\(try await api.getProvider(.with { $0.name = "cn" }))")
      out.append("\(try await api.listProviders(.init()))")
      // Errors never echo values.
      if let e = await rpcError({
        _ = try await api.createProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "cn"; $0.type = "codex"; $0.credentials = ["OPENAI_API_KEY": canary + "-4"]
            }
          })
      }) {
        out.append("\(e)")
      }
      if let e = await rpcError({
        _ = try await api.createProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "cn2"; $0.type = "codex"; $0.credentials = ["bad key": canary + "-5"]
            }
          })
      }) {
        out.append("\(e)")
      }
      if let e = await rpcError({
        _ = try await api.updateProvider(
          .with {
            $0.provider = .with {
              $0.metadata.name = "cn"; $0.type = "claude"; $0.credentials = ["OPENAI_API_KEY": canary + "-6"]
            }
          })
      }) {
        out.append("\(e)")
      }
      return out
    }
    texts += responses
    await gw.running.store.snapshot()
    await gw.stop()
    let log = try EventLog.open(directory: gw.dataDirectory + "/log")
    let audit = try Audit.timeline(
      log,
      query: {
        var q = AuditQuery(); q.provider = "cn"; return q
      }())
    let rotation = try #require(audit.first { $0.type == "provider.credential_rotated" })
    #expect(rotation.summary.contains("OPENAI_API_KEY") && rotation.actor.hasPrefix("operator:"))
    texts.append(Audit.table(audit))
    texts.append(try String(decoding: JSONEncoder().encode(audit), as: UTF8.self))
    texts.append(try StateView(StateLoader.replay(log)).json())
    log.close()
    for t in texts { #expect(!t.contains(canary), "leak: \(t.prefix(200))") }
    #expect(filesContaining(canary, under: gw.dataDirectory).isEmpty)
    #expect(try recordsContaining(canary, logDirectory: gw.dataDirectory + "/log").isEmpty)
    #expect(try !recordsContaining(marker, logDirectory: gw.dataDirectory + "/log").isEmpty, "the record search sees decompressed payloads")
    #expect(texts.contains { $0.contains(marker) }, "the state output includes config values")
  }

  @Test("an orphaned data key (crash between delete and shredding) is destroyed at start-up")
  func orphanKeysShredded() async throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gw-prov-\(UUID().uuidString)").path
    let vault = try SecretVault(directory: dir + "/keys")
    let orphan = try vault.createDataKey()
    let gw = try await ProviderGateway.start(dataDirectory: dir)
    let kept = try await gw.withClient { api in
      try await api.createProvider(
        .with {
          $0.provider = .with {
            $0.metadata.name = "keep"; $0.type = "generic"; $0.credentials = ["T": "v"]
          }
        }
      ).provider
    }
    #expect(!vault.hasDataKey(orphan))
    await gw.stop()
    let again = try await ProviderGateway.start(dataDirectory: dir)
    let keyID = try #require(await again.running.store.state.providers[kept.metadata.id]?.dataKeyID)
    #expect(vault.hasDataKey(keyID), "a live provider's key survives a restart")
    await again.stop()
  }
}
