import Foundation

/// What `--proxy` prints (``ProxyBench``): small-request latencies, each round's 100 MB downloads per mode
/// (direct, tunnel, L7, the sandbox's path without a relay and the peer relays of ``PeerRelays``) with every party's CPU per 100 MB, and one
/// summary table: median download rate, its share of direct's, the median of the rounds' shares and the
/// median CPU per party.
struct ProxyBenchReport {
  /// One round's batches: the product's three modes, then the path without a relay and one batch per running
  /// peer relay (in `peers` order).
  struct Round {
    var direct, tunnel, l7: ProxyBench.Batch
    var peers: [ProxyBench.Batch]
  }

  var requests, rounds, downloads: Int
  var direct, viaProxy, inspected: [Double]
  /// Name and setting of each peer that ran: the path without a relay, then the relays.
  var peers: [(name: String, setting: String)]
  var peerLatencies: [[Double]]
  /// One line per peer relay that did not run.
  var skipped: [String]
  var table: [Round]

  func print() {
    let p = ProxyBench.percentile
    Swift.print("policy proxy: \(requests) small requests (new connection each; via proxy = CONNECT + decision per request)")
    Swift.print(SandboxBench.summary("small request, direct   ", direct))
    Swift.print(SandboxBench.summary("small request, via proxy", viaProxy))
    Swift.print(String(format: "added latency: p50 %.2f ms, p99 %.2f ms", p(viaProxy, 0.5) - p(direct, 0.5), p(viaProxy, 0.99) - p(direct, 0.99)))
    Swift.print(SandboxBench.summary("small request, L7       ", inspected))
    Swift.print(String(format: "L7 added latency: p50 %.2f ms, p99 %.2f ms", p(inspected, 0.5) - p(direct, 0.5), p(inspected, 0.99) - p(direct, 0.99)))
    for line in skipped { Swift.print(line) }
    for (i, peer) in peers.enumerated() {
      Swift.print("peer \(peer.name): \(peer.setting)")
      Swift.print(SandboxBench.summary("small request, \(peer.name) (plain GET, no CONNECT)", peerLatencies[i]))
    }
    if !peers.isEmpty {
      Swift.print(
        "peers: on the sandbox's own path (its namespace, veth and nftables rules, one rule added to reach the peers' ports), listening on the veth's host address (relays → 127.0.0.1), the same python3 client in the sandbox; a plain GET, no CONNECT: TCP relays do less per connection than the policy proxy (no CONNECT, caller identification, policy or DNS check), the same per byte"
      )
    }
    let names = ["direct", "tunnel", "L7"] + peers.map(\.name)
    func batches(_ r: Round) -> [ProxyBench.Batch] { [r.direct, r.tunnel, r.l7] + r.peers }
    // BBR paces every hop, also loopback and veth: on this 2-core VM direct ran at ~2.7 GB/s with bbr and
    // ~7.5 GB/s with cubic (2026-12-07), and the ratios of every relay moved with it.
    let congestion =
      (try? String(contentsOfFile: "/proc/sys/net/ipv4/tcp_congestion_control", encoding: .utf8))?
      .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
    Swift.print("TCP congestion control (net.ipv4.tcp_congestion_control, every hop): \(congestion)")
    Swift.print(
      "100 MB downloads: \(rounds) rounds of \(names.joined(separator: ", ")) back to back, \(downloads) downloads each; rate = median download; CPU ms per 100 MB: server + proxy/relay + client"
    )
    for (i, r) in table.enumerated() {
      func cell(_ b: ProxyBench.Batch, _ base: ProxyBench.Batch?) -> String {
        let m = p(b.rates, 0.5)
        let share = base.map { String(format: " (%.0f%%)", 100 * m / p($0.rates, 0.5)) } ?? ""
        return String(format: "%.0f MB/s%@, CPU %.0f+%.0f+%.0f = %.0f", m, share, b.server, b.proxy, b.client, b.cpu)
      }
      let cells = batches(r).enumerated().map { j, b in "\(names[j]) \(cell(b, j == 0 ? nil : r.direct))" }
      Swift.print("  round \(i + 1): " + cells.joined(separator: "; "))
    }
    func all(_ j: Int) -> [Double] { table.flatMap { batches($0)[j].rates } }
    func cpu(_ j: Int) -> Double { p(table.map { batches($0)[j].cpu }, 0.5) }
    func shareOfRounds(_ j: Int) -> Double { p(table.map { 100 * p(batches($0)[j].rates, 0.5) / p($0.direct.rates, 0.5) }, 0.5) }
    let (d, t, l) = (p(all(0), 0.5), p(all(1), 0.5), p(all(2), 0.5))
    Swift.print(
      String(
        format: "100 MB download (median of %d each): direct %.0f MB/s, via proxy %.0f MB/s (%.0f%% of direct), L7 %.0f MB/s (%.0f%% of direct)",
        rounds * downloads, d, t, 100 * t / d, l, 100 * l / d))
    Swift.print(String(format: "median of rounds: tunnel %.0f%% of direct, L7 %.0f%% of direct", shareOfRounds(1), shareOfRounds(2)))
    let cores = Double(ProcessInfo.processInfo.activeProcessorCount)
    let (cd, ct, cl) = (cpu(0), cpu(1), cpu(2))
    Swift.print(
      String(
        format:
          "CPU per 100 MB, all parties (median of rounds): direct %.0f ms, tunnel %.0f ms (%.2f×), L7 %.0f ms (%.2f×); with %.0f cores the tunnel cannot exceed %.0f MB/s (%.0f MB × cores / CPU)",
        cd, ct, ct / cd, cl, cl / cd, cores, cores * Double(ProxyBench.bigBytes) / 1e6 / (ct / 1000), Double(ProxyBench.bigBytes) / 1e6))

    // The summary: one row per mode.
    Swift.print("== proxy throughput, 100 MB downloads (\(rounds) rounds × \(downloads), interleaved) ==")
    let head = ["mode", "MB/s (median)", "% of direct", "median of rounds", "CPU ms/100 MB server+relay+client (median of rounds)"]
    var rows: [[String]] = []
    for j in names.indices {
      func partCPU(_ f: (ProxyBench.Batch) -> Double) -> Double { p(table.map { f(batches($0)[j]) }, 0.5) }
      let rate = p(all(j), 0.5)
      rows.append([
        names[j], String(format: "%.0f", rate), j == 0 ? "100%" : String(format: "%.0f%%", 100 * rate / d),
        j == 0 ? "-" : String(format: "%.0f%%", shareOfRounds(j)),
        String(format: "%.0f + %.0f + %.0f = %.0f", partCPU(\.server), partCPU(\.proxy), partCPU(\.client), cpu(j)),
      ])
    }
    let widths = head.indices.map { i in ([head] + rows).map { $0[i].count }.max() ?? 0 }
    func line(_ cells: [String]) -> String {
      cells.enumerated().map { i, c in
        i == 0 ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0) : String(repeating: " ", count: widths[i] - c.count) + c
      }
      .joined(separator: "  ")
    }
    Swift.print(line(head))
    Swift.print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
    for r in rows { Swift.print(line(r)) }
    Swift.print("== end of proxy throughput ==")
  }
}
