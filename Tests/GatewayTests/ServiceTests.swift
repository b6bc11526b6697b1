import EventLog
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import Gateway
import OpenShellAPI
import Projections
import Testing

@Suite(.serialized) struct ServiceTests {
  @Test func healthAndGatewayInfo() async throws {
    let gw = try await TestGateway.start()
    defer { Task { await gw.stop() } }
    try await gw.withClient { api in
      let health = try await api.health(.init())
      #expect(health.status == .healthy)
      #expect(health.version == gatewayVersion)
      let info = try await api.getGatewayInfo(.init())
      #expect(info.gatewayVersion == gatewayVersion)
    }
    await gw.stop()
  }

  @Test func sandboxCrudAndErrors() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      let created = try await api.createSandbox(
        .with {
          $0.name = "happy-otter"
          $0.labels = ["app": "agent"]
          $0.workspaceScope = .ws("default")
        }
      ).sandbox
      #expect(!created.metadata.id.isEmpty)
      #expect(created.metadata.workspace == "default")
      #expect(created.status.phase == .provisioning, "no compute driver: the phase stays PROVISIONING")
      let got = try await api.getSandbox(
        .with {
          $0.name = "happy-otter"; $0.workspaceScope = .ws("default")
        }
      ).sandbox
      #expect(got.metadata.id == created.metadata.id)
      #expect(got.metadata.labels == ["app": "agent"])

      // A generated, valid name when none is given.
      let generated = try await api.createSandbox(.with { $0.workspaceScope = .ws("default") }).sandbox
      #expect(NameRule.violation(generated.metadata.name) == nil)

      // Errors: duplicate, bad name (with BadRequest details), missing, unknown workspace.
      #expect(await rpcCode { _ = try await api.createSandbox(.with { $0.name = "happy-otter" }) } == .alreadyExists)
      do {
        _ = try await api.createSandbox(.with { $0.name = "Bad_Name!" })
        Issue.record("bad name accepted")
      } catch let e as RPCError {
        #expect(e.code == .invalidArgument)
        let status = try e.unpackGoogleRPCStatus()
        #expect(status?.message == e.message, "the SDK keeps details only when code and message match")
        let violations = status?.details.compactMap(\.badRequest).flatMap { $0.violations.map(\.field) } ?? []
        #expect(violations == ["name"])
      }
      #expect(await rpcCode { _ = try await api.getSandbox(.with { $0.name = "nope" }) } == .notFound)
      #expect(
        await rpcCode {
          _ = try await api.getSandbox(
            .with {
              $0.name = "happy-otter"; $0.workspaceScope = .ws("ghost")
            })
        } == .notFound)
      #expect(
        await rpcCode {
          _ = try await api.getSandbox(
            .with {
              $0.name = "happy-otter"; $0.workspaceScope = .all
            })
        } == .invalidArgument)
      #expect(
        await rpcCode {
          _ = try await api.createSandbox(
            .with {
              $0.name = "x"; $0.spec.providers = ["missing"]
            })
        } == .failedPrecondition)
      #expect(
        await rpcCode {
          _ = try await api.createSandbox(
            .with {
              $0.name = "y"; $0.workloadTemplate = "missing"
            })
        } == .failedPrecondition)
      #expect(await rpcCode { _ = try await api.createSandbox(.with { $0.name = String(repeating: "a", count: 64) }) } == .invalidArgument)
      // An unsafe creation policy (OpenShell's gateway safety rules) is refused, naming the field.
      do {
        _ = try await api.createSandbox(
          .with {
            $0.name = "unsafe"; $0.spec.policy.process.runAsUser = "root"
          })
        Issue.record("unsafe policy accepted")
      } catch let e as RPCError {
        #expect(e.code == .invalidArgument)
        #expect(e.message.contains("run_as_user"))
        let fields = try e.unpackGoogleRPCStatus()?.details.compactMap(\.badRequest).flatMap { $0.violations.map(\.field) } ?? []
        #expect(fields.contains("spec.policy.process.run_as_user"))
      }

      // Stop / start without a compute driver.
      let stopped = try await api.stopSandbox(.with { $0.name = "happy-otter" }).sandbox
      #expect(stopped.status.phase == .stopped)
      let started = try await api.startSandbox(.with { $0.name = "happy-otter" }).sandbox
      #expect(started.status.phase == .provisioning)
      #expect(started.status.restartCount == 1)

      // Delete: outcome COMPLETED with the id acted on; then ALREADY_ABSENT / NOT_FOUND.
      let deleted = try await api.deleteSandbox(.with { $0.name = "happy-otter" })
      #expect(deleted.outcome == .completed)
      #expect(deleted.sandboxID == created.metadata.id)
      let again = try await api.deleteSandbox(
        .with {
          $0.name = "happy-otter"; $0.allowMissing = true
        })
      #expect(again.outcome == .alreadyAbsent)
      #expect(await rpcCode { _ = try await api.deleteSandbox(.with { $0.name = "happy-otter" }) } == .notFound)

      // The name is free again; the new sandbox has a new id.
      let reused = try await api.createSandbox(.with { $0.name = "happy-otter" }).sandbox
      #expect(reused.metadata.id != created.metadata.id)
    }
    await gw.stop()
  }

  @Test func paginationAndLabelSelectors() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      for i in 0..<7 {
        _ = try await api.createSandbox(
          .with {
            $0.name = "box-\(i)"; $0.labels = ["tier": i % 2 == 0 ? "even" : "odd"]
          })
      }
      var names: [String] = []
      var token = ""
      var pages = 0
      repeat {
        let page = try await api.listSandboxes(
          .with {
            $0.pageSize = 3; $0.pageToken = token
          })
        names += page.sandboxes.map(\.metadata.name)
        token = page.nextPageToken
        pages += 1
      } while !token.isEmpty && pages < 10
      #expect(pages == 3)
      #expect(names == (0..<7).map { "box-\($0)" })
      let even = try await api.listSandboxes(.with { $0.labelSelector = "tier=even" })
      #expect(even.sandboxes.map(\.metadata.name) == ["box-0", "box-2", "box-4", "box-6"])
      let notEven = try await api.listSandboxes(.with { $0.labelSelector = "tier!=even" })
      #expect(notEven.sandboxes.count == 3)
      #expect(await rpcCode { _ = try await api.listSandboxes(.with { $0.labelSelector = "=bad" }) } == .invalidArgument)
      #expect(await rpcCode { _ = try await api.listSandboxes(.with { $0.pageToken = "garbage" }) } == .invalidArgument)
      #expect(await rpcCode { _ = try await api.listSandboxes(.with { $0.pageSize = -1 }) } == .invalidArgument)
    }
    await gw.stop()
  }

  @Test func workspacesAndScope() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      let def = try await api.getWorkspace(.with { $0.name = "default" }).workspace
      #expect(def.status.phase == .active)
      let ws = try await api.createWorkspace(
        .with {
          $0.name = "research"; $0.labels = ["team": "ml"]
        }
      ).workspace
      #expect(ws.metadata.name == "research")
      #expect(await rpcCode { _ = try await api.createWorkspace(.with { $0.name = "research" }) } == .alreadyExists)
      #expect(await rpcCode { _ = try await api.createWorkspace(.with { $0.name = "default" }) } == .alreadyExists)
      #expect(await rpcCode { _ = try await api.createWorkspace(.with { $0.name = "Research" }) } == .invalidArgument)
      let list = try await api.listWorkspaces(.init())
      #expect(list.workspaces.map(\.metadata.name) == ["default", "research"])

      _ = try await api.createSandbox(
        .with {
          $0.name = "same"; $0.workspaceScope = .ws("default")
        })
      _ = try await api.createSandbox(
        .with {
          $0.name = "same"; $0.workspaceScope = .ws("research")
        })
      let inResearch = try await api.listSandboxes(.with { $0.workspaceScope = .ws("research") })
      #expect(inResearch.sandboxes.map(\.metadata.workspace) == ["research"])
      let everywhere = try await api.listSandboxes(.with { $0.workspaceScope = .all })
      #expect(everywhere.sandboxes.count == 2)

      #expect(await rpcCode { _ = try await api.deleteWorkspace(.with { $0.name = "research" }) } == .failedPrecondition)
      #expect(await rpcCode { _ = try await api.deleteWorkspace(.with { $0.name = "default" }) } == .failedPrecondition)
      _ = try await api.deleteSandbox(
        .with {
          $0.name = "same"; $0.workspaceScope = .ws("research")
        })
      #expect(try await api.deleteWorkspace(.with { $0.name = "research" }).outcome == .completed)
      #expect(
        try await api.deleteWorkspace(
          .with {
            $0.name = "research"; $0.allowMissing = true
          }
        ).outcome == .alreadyAbsent)
      #expect(await rpcCode { _ = try await api.getWorkspace(.with { $0.name = "research" }) } == .notFound)
    }
    await gw.stop()
  }

  @Test func templates() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      let t = try await api.createSandboxTemplate(
        .with {
          $0.template.metadata.name = "python-dev"
          $0.template.metadata.labels = ["lang": "python"]
          $0.template.spec.workload.environment = ["PYTHONUNBUFFERED": "1"]
        }
      ).template
      #expect(t.metadata.workspace == "default")
      #expect(t.spec.workload.environment == ["PYTHONUNBUFFERED": "1"])
      #expect(await rpcCode { _ = try await api.createSandboxTemplate(.with { $0.template.metadata.name = "python-dev" }) } == .alreadyExists)
      #expect(try await api.getSandboxTemplate(.with { $0.name = "python-dev" }).template.metadata.id == t.metadata.id)
      #expect(try await api.listSandboxTemplates(.with { $0.labelSelector = "lang=python" }).templates.count == 1)
      let sb = try await api.createSandbox(
        .with {
          $0.name = "from-tpl"; $0.workloadTemplate = "python-dev"
        }
      ).sandbox
      #expect(sb.createdFromWorkloadTemplate.name == "python-dev")
      #expect(try await api.deleteSandboxTemplate(.with { $0.name = "python-dev" }).outcome == .completed)
      #expect(
        try await api.deleteSandboxTemplate(
          .with {
            $0.name = "python-dev"; $0.allowMissing = true
          }
        ).outcome == .alreadyAbsent)
      #expect(await rpcCode { _ = try await api.getSandboxTemplate(.with { $0.name = "python-dev" }) } == .notFound)
    }
    await gw.stop()
  }

  @Test func concurrentCreatesOfOneNameExactlyOneWins() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      let codes = await withTaskGroup(of: RPCError.Code?.self) { group in
        for _ in 0..<16 {
          group.addTask { await rpcCode { _ = try await api.createSandbox(.with { $0.name = "contended" }) } }
        }
        return await group.reduce(into: [RPCError.Code?]()) { $0.append($1) }
      }
      #expect(codes.filter { $0 == nil }.count == 1)
      #expect(codes.compactMap { $0 }.allSatisfy { $0 == .alreadyExists })
      #expect(try await api.listSandboxes(.init()).sandboxes.count == 1)
      // A failed create does not leave its name taken.
      #expect(
        await rpcCode {
          _ = try await api.createSandbox(
            .with {
              $0.name = "later"; $0.spec.providers = ["missing"]
            })
        } == .failedPrecondition)
      _ = try await api.createSandbox(.with { $0.name = "later" })
    }
    await gw.stop()
  }

  @Test func requestIDMakesRetriesIdempotent() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      let a = try await api.createSandbox(
        .with {
          $0.name = "once"; $0.requestID = "req-1"
        }
      ).sandbox
      let b = try await api.createSandbox(
        .with {
          $0.name = "once"; $0.requestID = "req-1"
        }
      ).sandbox
      #expect(a.metadata.id == b.metadata.id)
      let d1 = try await api.deleteSandbox(
        .with {
          $0.name = "once"; $0.requestID = "req-2"
        })
      let d2 = try await api.deleteSandbox(
        .with {
          $0.name = "once"; $0.requestID = "req-2"
        })
      #expect(d1.outcome == .completed)
      #expect(d2.sandboxID == d1.sandboxID)
      #expect(d2.outcome == .completed)
    }
    await gw.stop()
  }

  @Test func everyMutatingRPCAppendsEventsNamingItsActor() async throws {
    let gw = try await TestGateway.start()
    let log = gw.running.store.log
    var expectedActor = ""
    try await gw.withClient { api in
      let mutations: [(String, () async throws -> Void)] = [
        ("CreateWorkspace", { _ = try await api.createWorkspace(.with { $0.name = "w1" }) }),
        ("CreateSandboxTemplate", { _ = try await api.createSandboxTemplate(.with { $0.template.metadata.name = "t1" }) }),
        ("CreateSandbox", { _ = try await api.createSandbox(.with { $0.name = "s1" }) }),
        ("StopSandbox", { _ = try await api.stopSandbox(.with { $0.name = "s1" }) }),
        ("StartSandbox", { _ = try await api.startSandbox(.with { $0.name = "s1" }) }),
        ("DeleteSandbox", { _ = try await api.deleteSandbox(.with { $0.name = "s1" }) }),
        ("DeleteSandboxTemplate", { _ = try await api.deleteSandboxTemplate(.with { $0.name = "t1" }) }),
        ("DeleteWorkspace", { _ = try await api.deleteWorkspace(.with { $0.name = "w1" }) }),
      ]
      for (rpc, call) in mutations {
        let before = log.headSeq
        try await call()
        let records = try log.records(from: before + 1)
        #expect(!records.isEmpty, "\(rpc) appended no event")
        for r in records {
          #expect(r.actor.hasPrefix("operator:CN=openshell-operator/sha256:"), "\(rpc): actor \(r.actor)")
          expectedActor = r.actor
        }
      }
    }
    #expect(!expectedActor.isEmpty)
    await gw.stop()
  }

  @Test func restartKeepsStateAndCA() async throws {
    let gw = try await TestGateway.start()
    let dir = gw.dataDirectory
    let ca = try String(contentsOfFile: gw.pki + "/ca.crt", encoding: .utf8)
    try await gw.withClient { api in
      _ = try await api.createWorkspace(.with { $0.name = "kept" })
      _ = try await api.createSandbox(
        .with {
          $0.name = "survivor"; $0.workspaceScope = .ws("kept")
        })
    }
    await gw.stop()
    let again = try await TestGateway.start(dataDirectory: dir)
    #expect(try String(contentsOfFile: again.pki + "/ca.crt", encoding: .utf8) == ca)
    try await again.withClient { api in
      let s = try await api.getSandbox(
        .with {
          $0.name = "survivor"; $0.workspaceScope = .ws("kept")
        }
      ).sandbox
      #expect(s.metadata.workspace == "kept")
    }
    // The gateway's initialisation is recorded once; the restart re-recorded nothing but needed changes.
    let initialized = try again.running.store.log.records(
      from: 1,
      filter: {
        var f = EventFilter.all; f.types = ["gateway.initialized"]; return f
      }())
    #expect(initialized.count == 1)
    await again.stop()
  }

  /// A graceful shutdown does not wait out its grace period for subscriptions: an open watch ends with
  /// UNAVAILABLE "shutting down" (clients reconnect), and the gateway stops long before the 120 s deadline.
  @Test func shutdownEndsSubscriptionsInsteadOfWaitingForTheDeadline() async throws {
    let gw = try await TestGateway.start(shutdownGracePeriod: .seconds(120))
    let started = ContinuousClock.now
    let ended: RPCError? = try await gw.withClient { api in
      _ = try await api.createSandbox(.with { $0.name = "watched" })
      return try await withThrowingTaskGroup(of: RPCError?.self) { group in
        group.addTask {
          do {
            try await api.watchSandbox(
              .with {
                $0.sandbox = "watched"; $0.followStatus = true
              }
            ) { response in
              for try await _ in response.messages {}
            }
            return nil
          } catch let e as RPCError {
            return e
          }
        }
        try await Task.sleep(for: .milliseconds(300))
        gw.running.shutdown()
        let result = try await group.next() ?? nil
        return result
      }
    }
    _ = try? await gw.task.value
    #expect(ended?.code == .unavailable, "\(String(describing: ended))")
    #expect(ended?.message.contains("shutting down") == true, "\(String(describing: ended))")
    // Not a timing benchmark: without draining, serve() would only return after the 120 s grace period.
    #expect(ContinuousClock.now - started < .seconds(60))
  }

  @Test func watchStreamsStatusChangesFromTheLog() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      _ = try await api.createSandbox(.with { $0.name = "watched" })
      let phases = try await withThrowingTaskGroup(of: [Openshell_V1_SandboxPhase].self) { group in
        group.addTask {
          try await api.watchSandbox(
            .with {
              $0.sandbox = "watched"; $0.followStatus = true; $0.followEvents = true
            }
          ) { response in
            var seen: [Openshell_V1_SandboxPhase] = []
            for try await message in response.messages {
              if case .sandbox(let s)? = message.payload { seen.append(s.status.phase) }
              #expect(UInt64(message.cursor) != nil)
            }
            return seen
          }
        }
        try await Task.sleep(for: .milliseconds(300))
        _ = try await api.stopSandbox(.with { $0.name = "watched" })
        _ = try await api.deleteSandbox(.with { $0.name = "watched" })
        return try await group.next() ?? []
      }
      #expect(phases.first == .provisioning)
      #expect(phases.contains(.stopped))
      #expect(phases.last == .deleting)
    }
    await gw.stop()
  }

  @Test func oversizedMessagesAreResourceExhausted() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      // The documented limit is 4 MiB per request message (GatewayServer.Configuration.maxRequestMessageBytes).
      let big = String(repeating: "x", count: 5 << 20)
      do {
        _ = try await api.createSandbox(
          .with {
            $0.name = "big"; $0.annotations = ["blob": big]
          })
        Issue.record("an oversized request was accepted")
      } catch {
        #expect((error as? RPCError)?.code == .resourceExhausted, "got \(error)")
      }
      let listed = try await api.listSandboxes(.init())
      #expect(listed.sandboxes.isEmpty, "nothing was recorded")
    }
    await gw.stop()
  }

  @Test func unimplementedRPCsSayWhich() async throws {
    let gw = try await TestGateway.start()
    try await gw.withClient { api in
      do {
        _ = try await api.getCurrentUser(.init())
        Issue.record("expected UNIMPLEMENTED")
      } catch let e as RPCError {
        #expect(e.code == .unimplemented)
        #expect(e.message.contains("GetCurrentUser"))
      }
    }
    await gw.stop()
  }

  @Test func sandboxIdentitiesCannotCallUserRPCs() async throws {
    let gw = try await TestGateway.start()
    let issued = try gw.running.pki!.issueSandboxCertificate(sandboxID: "abc")
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sbcert-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try issued.certificatePEM.write(toFile: dir + "/s.crt", atomically: true, encoding: .utf8)
    try issued.privateKeyPEM.write(toFile: dir + "/s.key", atomically: true, encoding: .utf8)
    try await gw.withClient(certificate: dir + "/s.crt", key: dir + "/s.key") { api in
      #expect(await rpcCode { _ = try await api.createSandbox(.with { $0.name = "evil" }) } == .permissionDenied)
      #expect(await rpcCode { _ = try await api.listSandboxes(.init()) } == .permissionDenied)
      let health = try await api.health(.init())
      #expect(health.status == .healthy)
    }
    await gw.stop()
  }
}
