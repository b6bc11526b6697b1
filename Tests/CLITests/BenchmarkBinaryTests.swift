import Foundation
import Testing

/// Issue 14: the benchmark binaries stay runnable (benchmarks are not tests; this is a small correctness
/// run so that `scripts/bench.sh` cannot rot): `openshell-loadgen --issue14` with tiny settings prints
/// every request-path row with a number, no failed calls, and the etcd peer answered.
@Suite(.serialized) struct BenchmarkBinaryTests {
  @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/etcd"), "needs Debian etcd-server (scripts/setup.sh)"))
  func loadgenIssue14PrintsEveryRow() throws {
    let env = try CLIEnv("bench-loadgen")
    defer { env.cleanup() }
    let r = try env.run(
      [
        "--issue14", "--concurrency", "1", "--duration", "0.3", "--events", "3000", "--rss-sandboxes", "30", "--restarts", "1",
        "--gateway-binary", CLIEnv.openshell,
      ], binary: CLIEnv.binDir.appendingPathComponent("openshell-loadgen").path)
    #expect(r.code == 0, "\(r)")
    let table = r.out.components(separatedBy: "== Issue 14 targets (request path) ==").last ?? ""
    for row in [
      "GetSandbox, mTLS, c=64", "GetSandbox, mTLS, c=1, p99", "CreateSandbox, durable, no compute, c=1 (peer: etcd Put)",
      "CreateSandbox, durable, no compute, c=64 (peer: etcd Put)", "gateway restart to serving, 3000-event log", "gateway RSS idle",
      "gateway RSS, 30 sandboxes in state",
    ] {
      #expect(table.contains(row), "missing row \(row):\n\(r.out)")
    }
    // Our cells ran without failed calls (column 4: errors); etcd applied Puts (its revision moved).
    let cells = r.out.split(separator: "\n").filter { $0.hasPrefix("GetSandbox ") || $0.hasPrefix("CreateSandbox ") || $0.hasPrefix("etcd Put") }
    #expect(cells.count == 6, "\(r.out)")
    for c in cells {
      let columns = c.split(separator: "  ").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
      #expect(columns.count == 9 && (Int(columns[2]) ?? 0) > 0, "\(c)")
      if c.hasPrefix("etcd") {
        #expect(columns[8].hasPrefix("applied ") && (Int(columns[8].dropFirst(8)) ?? 0) > 0, "\(c)")
      } else {
        #expect(columns.count == 9 && columns[3] == "0", "\(c)")
      }
    }
    // The restart and RSS figures are numbers in plausible ranges (a gateway is more than 5 MB, starts in under a minute).
    let rss = try #require(r.out.firstMatch(of: /RSS: idle ([0-9.]+) MB, with 30 sandboxes ([0-9.]+) MB/))
    #expect((Double(rss.1) ?? 0) > 5 && (Double(rss.2) ?? 0) > 5, "\(r.out)")
    let restart = try #require(r.out.firstMatch(of: /restarts ([0-9.]+) s/))
    #expect((Double(restart.1) ?? 0) > 0 && (Double(restart.1) ?? 99) < 60, "\(r.out)")
  }

  /// `openshell-loadgen --mixed` against the gateway binary: both rows with answered calls and no errors,
  /// and the gateway's CPU per request as a positive number.
  @Test func loadgenMixedPrintsBothRows() throws {
    let env = try CLIEnv("bench-mixed")
    defer { env.cleanup() }
    let r = try env.run(
      ["--mixed", "--concurrency", "2", "--duration", "0.3", "--preload", "20", "--gateway-binary", CLIEnv.openshell],
      binary: CLIEnv.binDir.appendingPathComponent("openshell-loadgen").path)
    #expect(r.code == 0, "\(r)")
    let cells = r.out.split(separator: "\n").filter { $0.hasPrefix("GetSandbox (mixed)") || $0.hasPrefix("CreateSandbox (mixed)") }
    #expect(cells.count == 2, "\(r.out)")
    for c in cells {
      let columns = c.split(separator: "  ").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
      #expect(columns.count == 9 && (Int(columns[2]) ?? 0) > 0 && columns[3] == "0", "\(c)")
    }
    let cpu = try #require(r.out.firstMatch(of: /gateway CPU: ([0-9.]+) µs per request/))
    #expect((Double(cpu.1) ?? 0) > 0, "\(r.out)")
  }

  /// `openshell-loadgen --floor` (issue 14): a row for each of the three servers (our gateway, the bare
  /// grpc-swift-2 server over mTLS and over plaintext) with answered calls, no errors, a positive req/s and CPU.
  @Test func loadgenFloorPrintsThreeServers() throws {
    let env = try CLIEnv("bench-floor")
    defer { env.cleanup() }
    let r = try env.run(
      ["--floor", "--concurrency", "1", "--duration", "0.2"], binary: CLIEnv.binDir.appendingPathComponent("openshell-loadgen").path)
    #expect(r.code == 0, "\(r)")
    for server in ["openshell gateway, mTLS", "bare grpc-swift-2, mTLS", "bare grpc-swift-2, plaintext"] {
      let row = try #require(r.out.split(separator: "\n").first { $0.hasPrefix(server + "  ") }, "missing row \(server):\n\(r.out)")
      let columns = row.split(separator: "  ").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
      // server, concurrency, requests, errors, req/s, p50 µs, p99 µs, CPU µs/req, load 1m
      #expect(columns.count == 9 && columns[1] == "1" && (Int(columns[2]) ?? 0) > 0 && columns[3] == "0", "\(row)")
      #expect((Double(columns[4]) ?? 0) > 0 && (Double(columns[7]) ?? 0) > 0, "\(row)")
    }
  }

  /// Two modes in one run are refused with one line naming both, before any gateway starts (`--floor` beside
  /// `--issue14` was silently ignored).
  @Test func loadgenRefusesTwoModes() throws {
    let env = try CLIEnv("bench-modes")
    defer { env.cleanup() }
    let r = try env.run(["--floor", "--issue14"], binary: CLIEnv.binDir.appendingPathComponent("openshell-loadgen").path)
    #expect(r.code != 0, "\(r)")
    #expect(r.err.contains("choose one of --issue14, --floor, not several"), "\(r)")
    #expect(r.out.isEmpty, "nothing ran: \(r)")
  }

  /// `openshell-loadgen --watch-events` (issue 12) with a log of more than one history page: every catch-up
  /// and the live phase deliver every seq once and in order, the rates are numbers, and every live record
  /// arrives.
  @Test func loadgenWatchEventsDeliversEverySeq() throws {
    let env = try CLIEnv("bench-watch")
    defer { env.cleanup() }
    let r = try env.run(
      ["--watch-events", "5000", "--rounds", "1", "--duration", "0.5", "--live-rate", "200"],
      binary: CLIEnv.binDir.appendingPathComponent("openshell-loadgen").path)
    #expect(r.code == 0, "\(r)")
    #expect(r.out.firstMatch(of: /every seq once, in order +yes/) != nil, "\(r.out)")
    let live = try #require(r.out.firstMatch(of: /events appended \/ received +([0-9]+) \/ ([0-9]+) at 200\/s/), "\(r.out)")
    #expect(live.1 == "100" && live.2 == "100", "\(r.out)")
    for row in ["catch-up, WatchEventBatches (events/s", "catch-up, log borrowing reader alone", "CPU of the process during the live phase"] {
      let line = try #require(r.out.split(separator: "\n").first { $0.contains(row) }, "missing \(row):\n\(r.out)")
      let value = line.split(separator: " ").last.map(String.init) ?? ""
      #expect((Double(value) ?? 0) > 0, "\(line)")
    }
  }

  /// `openshell-sandbox-bench --proxy` (issue 10) with one download per mode: every mode's summary row has a
  /// rate — among them the sandbox's path without a relay and the peer relays (HAProxy, nginx stream), run
  /// on the sandbox's own path with the client inside it — and no relay process of the run is left.
  @Test(
    .enabled(
      if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/haproxy")
        && FileManager.default.fileExists(atPath: "/usr/lib/nginx/modules/ngx_stream_module.so"),
      "needs root (network namespaces) and Debian haproxy + libnginx-mod-stream (scripts/setup.sh)"))
  func sandboxBenchProxyRunsThePeerRelays() throws {
    let env = try CLIEnv("bench-proxy")
    defer { env.cleanup() }
    let r = try env.run(
      ["--proxy", "--requests", "3", "--proxy-rounds", "1", "--proxy-downloads", "1", "--data-dir", env.root.path + "/gw"],
      binary: CLIEnv.binDir.appendingPathComponent("openshell-sandbox-bench").path)
    #expect(r.code == 0, "\(r)")
    let table = r.out.components(separatedBy: "== proxy throughput").last ?? ""
    for mode in ["direct", "tunnel", "L7", "veth, no relay", "HAProxy splice", "HAProxy 256K", "nginx stream", "nginx 256K"] {
      let row = try #require(table.split(separator: "\n").first { $0.hasPrefix(mode + "  ") }, "missing row \(mode):\n\(r.out)")
      let rate = row.dropFirst(mode.count).split(separator: " ").first.map(String.init) ?? ""
      #expect((Double(rate) ?? 0) > 0, "\(row)")
    }
    #expect(r.out.contains("peer HAProxy splice: HAProxy 2."), "\(r.out)")
    #expect(r.out.contains("peers: on the sandbox's own path"), "\(r.out)")
    let leftover = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { pid in
      Int32(pid) != nil
        && String(decoding: FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data(), as: UTF8.self).contains("oshbench-peer-")
    }
    #expect(leftover.isEmpty, "relay processes left: \(leftover)")
  }

  /// `--compute-driver` takes only the drivers there are (one readable line, exit != 0).
  @Test func serveRefusesAnUnknownComputeDriver() throws {
    let env = try CLIEnv("bench-driver")
    defer { env.cleanup() }
    let r = try env.run(["gateway", "serve", "--data-dir", env.root.path + "/gw", "--port", "0", "--compute-driver", "kubernetes"])
    #expect(r.code != 0, "\(r)")
    #expect(r.err.contains("--compute-driver must be local or none"), "\(r)")
  }
}
