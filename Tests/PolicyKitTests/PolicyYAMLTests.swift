import Foundation
import OpenShellAPI
import PolicyKit
import Testing

/// Policy examples from OpenShell's documentation and test data (v0.0.30 schema).
enum Examples {
  /// crates/openshell-sandbox/testdata/sandbox-policy.yaml
  static let sandboxPolicy = """
    # Minimal sandbox policy fixture for OPA engine tests.
    version: 1

    filesystem_policy:
      include_workdir: true
      read_only:
        - /usr
        - /lib
        - /proc
        - /dev/urandom
        - /app
        - /etc
        - /var/log
      read_write:
        - /sandbox
        - /tmp
        - /dev/null

    landlock:
      compatibility: best_effort

    process:
      run_as_user: sandbox
      run_as_group: sandbox

    network_policies:
      claude_code:
        name: claude_code
        endpoints:
          - { host: api.anthropic.com, port: 443 }
          - { host: statsig.anthropic.com, port: 443 }

      github_ssh_over_https:
        name: github-ssh-over-https
        endpoints:
          - host: github.com
            port: 443
            protocol: rest
            enforcement: enforce
            rules:
              - allow:
                  method: GET
                  path: "/**/info/refs*"
              - allow:
                  method: POST
                  path: "/**/git-upload-pack"

      gitlab:
        name: gitlab
        endpoints:
          - { host: gitlab.com, port: 443 }
    """

  /// docs: network rules (rule structure, read-only API, methods and paths with deny rules, PyPI, allowed_ips).
  static let networkRules = """
    version: 1
    network_policies:
      example_api:
        endpoints:
          - host: api.example.com
            port: 443
          - host: uploads.example.com
            port: 443
        binaries:
          - path: /usr/bin/curl
          - path: /usr/bin/wget
      github_readonly:
        endpoints:
          - host: api.github.com
            port: 443
            protocol: rest
            enforcement: enforce
            access: read-only
        binaries:
          - path: /usr/bin/curl
      github_repository_api:
        endpoints:
          - host: api.github.com
            port: 443
            protocol: rest
            enforcement: enforce
            rules:
              - allow:
                  method: "*"
                  path: "/repos/<org>/<repo>/**"
            deny_rules:
              - method: "*"
                path: "/repos/<org>/<repo>/hooks"
              - method: "*"
                path: "/repos/<org>/<repo>/hooks/**"
        binaries:
          - path: /usr/bin/gh
          - path: /usr/local/bin/gh
      pypi:
        endpoints:
          - host: pypi.org
            port: 443
            protocol: rest
            enforcement: enforce
            access: read-only
          - host: files.pythonhosted.org
            port: 443
            protocol: rest
            enforcement: enforce
            access: read-only
        binaries:
          - path: /usr/bin/python3.12
          - path: /usr/local/bin/uv
          - path: /sandbox/.uv/python/*/bin/python3*
      internal_api:
        endpoints:
          - host: api.internal.example
            port: 443
            protocol: rest
            enforcement: enforce
            access: read-only
            allowed_ips:
              - 10.20.0.0/16
        binaries:
          - path: /usr/bin/curl
      search:
        endpoints:
          - host: "**.search.example.com"
            ports: [443, 8443]
            protocol: rest
            enforcement: audit
            rules:
              - allow:
                  method: GET
                  path: /search
                  query:
                    q: "*"
                    lang: { any: ["en*", "fr*"] }
      db:
        endpoints:
          - host: db.example.com
            port: 5432
            protocol: sql
            enforcement: audit
            access: full
        binaries:
          - { path: /usr/bin/psql, harness: false }
    """

  /// The NemoClaw-style default (docs: default policy).
  static let defaultPolicy = """
    version: 1
    filesystem_policy:
      include_workdir: true
      read_only: [/usr, /lib, /proc, /dev/urandom, /app, /etc, /var/log]
      read_write: [/sandbox, /tmp, /dev/null]
    landlock:
      compatibility: best_effort
    process:
      run_as_user: sandbox
      run_as_group: sandbox
    network_policies:
      npm_yarn:
        name: npm_yarn
        endpoints:
          - host: registry.npmjs.org
            port: 443
            access: full
            protocol: rest
    """
}

@Suite struct PolicyYAMLTests {
  @Test(arguments: [Examples.sandboxPolicy, Examples.networkRules, Examples.defaultPolicy])
  func documentationExamplesAreAccepted(_ yaml: String) throws {
    let parsed = try PolicyYAML.parse(yaml)
    #expect(parsed.policy.version == 1)
    #expect(PolicyYAML.check(yaml) == [])
  }

  @Test func mapping() throws {
    let p = try PolicyYAML.parse(Examples.sandboxPolicy).policy
    #expect(p.filesystem.includeWorkdir)
    #expect(p.filesystem.readOnly.count == 7)
    #expect(p.landlock.compatibility == "best_effort")
    #expect(p.process.runAsUser == "sandbox")
    let gh = try #require(p.networkPolicies["github_ssh_over_https"])
    #expect(gh.name == "github-ssh-over-https")
    #expect(gh.endpoints[0].ports == [443])  // port folded into ports
    #expect(gh.endpoints[0].protocol == "rest")
    #expect(gh.endpoints[0].enforcement == .enforce)
    #expect(gh.endpoints[0].rules[1].allow.method == "POST")
    let n = try PolicyYAML.parse(Examples.networkRules).policy
    #expect(n.networkPolicies["example_api"]?.name == "example_api")  // name defaults to the key
    #expect(n.networkPolicies["example_api"]?.binaries.map(\.path) == ["/usr/bin/curl", "/usr/bin/wget"])
    #expect(n.networkPolicies["github_repository_api"]?.endpoints[0].denyRules.count == 2)
    #expect(n.networkPolicies["search"]?.endpoints[0].ports == [443, 8443])
    #expect(n.networkPolicies["search"]?.endpoints[0].rules[0].allow.query["lang"]?.any == ["en*", "fr*"])
    #expect(n.networkPolicies["search"]?.endpoints[0].rules[0].allow.query["q"]?.glob == "*")
    #expect(n.networkPolicies["internal_api"]?.endpoints[0].allowedIps == ["10.20.0.0/16"])
    #expect(n.networkPolicies["pypi"]?.endpoints[0].access == .readOnly)
  }

  @Test(arguments: [Examples.sandboxPolicy, Examples.networkRules, Examples.defaultPolicy])
  func roundTrip(_ yaml: String) throws {
    let p = try PolicyYAML.parse(yaml).policy
    let rendered = PolicyYAML.render(p)
    let again = try PolicyYAML.parse(rendered).policy
    #expect(again == p, "\(rendered)")
    #expect(PolicyRules.hash(again) == PolicyRules.hash(p))
  }

  @Test func hashIgnoresFormatting() throws {
    let a = try PolicyYAML.parse("version: 1\nnetwork_policies:\n  x:\n    endpoints: [{host: a.com, port: 443}]\n").policy
    let b = try PolicyYAML.parse(
      "# comment\nversion: 1\nprocess: {run_as_user: sandbox}\nnetwork_policies:\n  x:\n    name: x\n    endpoints:\n      - host: a.com\n        ports: [443]\n"
    ).policy
    #expect(PolicyRules.hash(a) == PolicyRules.hash(b))
    #expect(PolicyRules.hash(a).count == 64)
  }

  func parseIssues(_ yaml: String) -> [PolicyIssue] {
    do {
      _ = try PolicyYAML.parse(yaml)
      return []
    } catch let e as PolicyParseError {
      #expect(e.description.hasPrefix("failed to parse sandbox policy YAML"))
      return e.issues
    } catch {
      Issue.record("unexpected \(error)")
      return []
    }
  }

  @Test func unknownKeysNameTheFieldPathAndLine() {
    let top = parseIssues("version: 1\nfilesystem: {}\n")
    #expect(top.first?.path == "filesystem")
    #expect(top.first?.line == 2)
    #expect(top.first?.message.contains("unknown field `filesystem`") == true)

    let deep = parseIssues(
      """
      version: 1
      network_policies:
        api:
          endpoints:
            - host: a.example.com
              port: 443
              methods: [GET]
      """)
    #expect(deep.count == 1)
    #expect(deep.first?.path == "network_policies.api.endpoints[0].methods")
    #expect(deep.first?.line == 7)

    let rule = parseIssues("version: 1\nnetwork_policies:\n  api:\n    endpoint: []\n")
    #expect(rule.first?.path == "network_policies.api.endpoint")
    let fs = parseIssues("version: 1\nfilesystem_policy:\n  read_only: [/usr]\n  writable: [/tmp]\n")
    #expect(fs.first?.path == "filesystem_policy.writable")
    #expect(fs.first?.line == 4)
    let allow = parseIssues(
      "version: 1\nnetwork_policies:\n  a:\n    endpoints:\n      - host: a.com\n        port: 443\n        protocol: rest\n        rules:\n          - allow: {method: GET, verb: x}\n"
    )
    #expect(allow.first?.path == "network_policies.a.endpoints[0].rules[0].allow.verb")
    #expect(allow.first?.line == 9)
  }

  @Test func structuralRules() {
    #expect(parseIssues("filesystem_policy: {}\n").first?.message == "missing field `version`")
    #expect(parseIssues("version: one\n").first?.path == "version")
    #expect(parseIssues("version: 1\nfilesystem_policy:\n  include_workdir: maybe\n").first?.path == "filesystem_policy.include_workdir")
    #expect(parseIssues("version: 1\nlandlock:\n  compatibility: strict\n").first?.message.contains("best_effort, hard_requirement") == true)
    let port = parseIssues("version: 1\nnetwork_policies:\n  a:\n    endpoints:\n      - host: a.com\n        port: 70000\n")
    #expect(port.first?.path == "network_policies.a.endpoints[0].port")
    #expect(port.first?.line == 6)
    #expect(port.first?.message.contains("out of range") == true)
    let both = parseIssues("version: 1\nnetwork_policies:\n  a:\n    endpoints:\n      - host: a.com\n        port: 443\n        ports: [80]\n")
    #expect(both.first?.message == "port and ports are mutually exclusive; use ports for multiple ports")
    let proto = parseIssues("version: 1\nnetwork_policies:\n  a:\n    endpoints:\n      - {host: a.com, port: 1, protocol: grpc, access: full}\n")
    #expect(proto.first?.path == "network_policies.a.endpoints[0].protocol")
    let tls = parseIssues("version: 1\nnetwork_policies:\n  a:\n    endpoints:\n      - {host: a.com, port: 1, tls: maybe}\n")
    #expect(tls.first?.path == "network_policies.a.endpoints[0].tls")
    let access = parseIssues("version: 1\nnetwork_policies:\n  a:\n    endpoints:\n      - {host: a.com, port: 1, access: write}\n")
    #expect(access.first?.message.contains("full, read-only, read-write") == true)
    let enf = parseIssues("version: 1\nnetwork_policies:\n  a:\n    endpoints:\n      - {host: a.com, port: 1, enforcement: block}\n")
    #expect(enf.first?.path == "network_policies.a.endpoints[0].enforcement")
    let emptyRules = parseIssues("version: 1\nnetwork_policies:\n  a:\n    endpoints:\n      - {host: a.com, port: 1, protocol: rest, rules: []}\n")
    #expect(emptyRules.first?.message == "rules list cannot be empty (would deny all traffic). Use access: full or remove rules.")
    let emptyDeny = parseIssues(
      "version: 1\nnetwork_policies:\n  a:\n    endpoints:\n      - {host: a.com, port: 1, protocol: rest, access: full, deny_rules: []}\n")
    #expect(emptyDeny.first?.message.hasPrefix("deny_rules list cannot be empty") == true)
    let noHost = parseIssues("version: 1\nnetwork_policies:\n  a:\n    endpoints:\n      - {port: 1}\n")
    #expect(noHost.first?.path == "network_policies.a.endpoints[0].host")
    let notList = parseIssues("version: 1\nfilesystem_policy:\n  read_only: /usr\n")
    #expect(notList.first?.message == "expected a list")
    #expect(parseIssues("version: 1\nversion: 2\n").first?.message.contains("duplicate") == true)
    #expect(parseIssues("version: [1\n").first?.message.hasPrefix("invalid YAML") == true)
  }

  @Test func queryMatcherShapes() {
    func q(_ matcher: String) -> String? {
      parseIssues(
        "version: 1\nnetwork_policies:\n  a:\n    endpoints:\n      - host: a.com\n        port: 443\n        protocol: rest\n        rules:\n          - allow:\n              method: GET\n              query:\n                p: \(matcher)\n"
      ).first?.message
    }
    #expect(q("[a, b]") == "expected string glob or object with any")
    #expect(q("{regex: x}") == "only glob or any are supported")
    #expect(q("{glob: a, any: [b]}") == "cannot specify both glob and any")
    #expect(q("{any: []}") == "any: list must not be empty")
    #expect(q("{glob: \"a*\"}") == nil)
    #expect(q("{any: [a]}") == nil)
  }

  func located(_ yaml: String) -> [PolicyIssue] { PolicyYAML.check(yaml) }

  @Test func safetyRules() {
    let issues = located(
      """
      version: 1
      filesystem_policy:
        read_only:
          - usr
          - /a/../etc
        read_write:
          - /
      process:
        run_as_user: root
        run_as_group: wheel
      network_policies:
        tld:
          endpoints:
            - host: "*.com"
              port: 443
      """)
    let messages = issues.map(\.message)
    #expect(messages.contains("run_as_user must be 'sandbox', got 'root'"))
    #expect(messages.contains("run_as_group must be 'sandbox', got 'wheel'"))
    #expect(messages.contains("path must be absolute (start with '/'): usr"))
    #expect(messages.contains("path contains '..' traversal component: /a/../etc"))
    #expect(messages.contains("read-write path is overly broad: /"))
    #expect(messages.contains { $0.hasPrefix("network policy 'tld': TLD wildcard '*.com' is not allowed") })
    #expect(issues.first { $0.message.hasPrefix("path must be absolute") }?.line == 4)
    #expect(issues.first { $0.message.hasPrefix("path must be absolute") }?.path == "filesystem_policy.read_only[0]")
    #expect(issues.first { $0.message.hasPrefix("run_as_user") }?.line == 9)

    let long = "/" + String(repeating: "a", count: 4100)
    #expect(located("version: 1\nfilesystem_policy:\n  read_only: [\(long)]\n").first?.message.hasPrefix("path exceeds maximum length (4101 > 4096)") == true)
    let many = (0..<257).map { "/p\($0)" }.joined(separator: ", ")
    #expect(located("version: 1\nfilesystem_policy:\n  read_only: [\(many)]\n").map(\.message) == ["too many filesystem paths (257 > 256)"])
    let p = PolicyRules.safetyIssues(.with { $0.process.runAsUser = "root" })
    #expect(PolicyRules.unsafeMessage(p) == "policy contains unsafe content: run_as_user must be 'sandbox', got 'root'")
  }

  @Test func l7Rules() {
    func l7(_ endpoint: String) -> [String] {
      located("version: 1\nnetwork_policies:\n  p:\n    endpoints:\n      - \(endpoint)\n").map(\.description)
    }
    #expect(l7("{host: '*', port: 443}") == ["network_policies.p.endpoints[0].host (line 5): host '*' matches all hosts; list the hosts to allow"])
    #expect(l7("{host: '**', port: 443}").first?.contains("matches all hosts") == true)
    #expect(l7("{host: 'api*.example.com', port: 443}").first?.contains("must start with '*.'") == true)
    #expect(
      l7("{host: 'a.com', port: 443, protocol: rest, access: full, rules: [{allow: {method: GET}}]}").first?.contains("rules and access are mutually exclusive")
        == true)
    #expect(l7("{host: 'a.com', port: 443, protocol: rest}").first?.contains("protocol requires rules or access to define allowed traffic") == true)
    #expect(
      l7("{host: 'a.com', port: 5432, protocol: sql, enforcement: enforce, access: full}").first?.contains(
        "SQL enforcement requires full SQL parsing (not available in v1). Use enforcement: audit.") == true)
    #expect(
      l7("{host: 'a.com', port: 443, access: full, deny_rules: [{method: POST}]}").first?.contains(
        "deny_rules require protocol (L7 inspection must be enabled)") == true)
    #expect(
      l7("{host: 'a.com', port: 443, protocol: rest, deny_rules: [{method: POST}]}").contains {
        $0.contains("deny_rules require rules or access to define the base allow set")
      })
    #expect(
      l7("{host: 'a.com', port: 443, protocol: rest, rules: [{allow: {method: FETCH}}]}").first?.contains(
        "rules[0].allow.method (line 5): unknown HTTP method 'FETCH'") == true)
    #expect(l7("{host: 'a.com', port: 443, allowed_ips: [10.0.0.0/33]}").first?.contains("is not an IP address or CIDR") == true)
    // The proto form (RPC clients) may carry both port and ports.
    let both = PolicyRules.l7Issues(
      .with {
        $0.networkPolicies["x"] = .with {
          $0.endpoints = [
            .with {
              $0.host = "a.com"; $0.port = 443; $0.ports = [80]
            }
          ]
        }
      })
    #expect(both.map(\.message) == ["port and ports are mutually exclusive; use ports for multiple ports"])
    let warnings = PolicyRules.l7Warnings(
      .with {
        $0.networkPolicies["x"] = .with {
          $0.endpoints = [
            .with {
              $0.host = "a.com"; $0.ports = [443]; $0.tls = .terminate
            }
          ]
        }
      })
    #expect(warnings.first?.message.contains("deprecated") == true)
  }

  @Test func liveUpdateRules() throws {
    let base = try PolicyYAML.parse(Examples.defaultPolicy).policy
    // Network policies stay live.
    var grown = base
    grown.networkPolicies["more"] = .with {
      $0.endpoints = [
        .with {
          $0.host = "x.example.com"; $0.ports = [443]
        }
      ]
    }
    #expect(PolicyRules.liveUpdateIssues(baseline: base, proposed: grown) == [])
    // Startup-only sections: every change is refused (removals, additions), naming the section and
    // saying that a stop + start applies it.
    let hint = " (applied at startup; `sandbox stop` + `sandbox start` applies it)"
    var added = base
    added.filesystem.readOnly.append("/opt")
    #expect(
      PolicyRules.liveUpdateIssues(baseline: base, proposed: added).map(\.message) == [
        "filesystem read_only path '/opt' cannot be added on a live sandbox" + hint
      ])
    var shrunk = base
    shrunk.filesystem.readOnly.removeAll { $0 == "/usr" }
    shrunk.filesystem.readWrite.removeAll { $0 == "/tmp" }
    shrunk.filesystem.includeWorkdir = false
    shrunk.landlock.compatibility = "hard_requirement"
    shrunk.process.runAsUser = "other"
    #expect(
      PolicyRules.liveUpdateIssues(baseline: base, proposed: shrunk).map(\.message) == [
        "filesystem include_workdir cannot be changed on a live sandbox" + hint,
        "filesystem read_only path '/usr' cannot be removed on a live sandbox" + hint,
        "filesystem read_write path '/tmp' cannot be removed on a live sandbox" + hint,
        "landlock policy cannot be changed on a live sandbox" + hint,
        "process policy cannot be changed on a live sandbox" + hint,
      ])
    #expect(
      PolicyRules.liveUpdateIssues(baseline: base, proposed: shrunk).map(\.path) == [
        "filesystem_policy.include_workdir", "filesystem_policy.read_only", "filesystem_policy.read_write", "landlock", "process",
      ])
    // Sections compare as the sandbox starts with them: omitting one that equals the default's is no
    // change; omitting or adding one that differs from it is.
    var custom = base
    custom.filesystem.readOnly.append("/opt")
    var removed = custom
    removed.clearFilesystem()
    #expect(
      PolicyRules.liveUpdateIssues(baseline: custom, proposed: removed).map(\.message) == ["filesystem policy cannot be removed on a live sandbox" + hint])
    var none = base
    none.clearFilesystem()
    #expect(PolicyRules.liveUpdateIssues(baseline: none, proposed: custom).map(\.message) == ["filesystem policy cannot be added on a live sandbox" + hint])
    var networkOnly = grown
    networkOnly.clearFilesystem()
    networkOnly.clearLandlock()
    networkOnly.clearProcess()
    #expect(PolicyRules.liveUpdateIssues(baseline: PolicyRules.restrictiveDefault, proposed: networkOnly) == [])
    #expect(PolicyRules.liveUpdateIssues(baseline: none, proposed: base) == [])
    var strict = networkOnly
    strict.landlock.compatibility = "hard_requirement"
    #expect(PolicyRules.liveUpdateIssues(baseline: PolicyRules.restrictiveDefault, proposed: strict).map(\.path) == ["landlock"])
  }

  @Test func unreadableAndBinaryFilesAreNamedInOneLine() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("policykit-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let missing = dir.appendingPathComponent("missing.yaml").path
    #expect(throws: PolicyFileError(path: missing, reason: "No such file or directory")) { try PolicyYAML.parse(contentsOf: missing) }
    #expect(PolicyFileError(path: missing, reason: "No such file or directory").description == "cannot read policy file \(missing): No such file or directory")
    #expect(throws: PolicyFileError(path: dir.path, reason: "Is a directory")) { try PolicyYAML.parse(contentsOf: dir.path) }
    let binary = dir.appendingPathComponent("binary.yaml")
    try Data([0x76, 0x3A, 0x20, 0xFF, 0xFE, 0x00, 0x0A]).write(to: binary)
    #expect(throws: PolicyFileError(path: binary.path, reason: nil)) { try PolicyYAML.parse(contentsOf: binary.path) }
    #expect(PolicyFileError(path: binary.path, reason: nil).description == "policy file \(binary.path) is not UTF-8 text")
  }

  @Test("a policy read from a pipe or a character device (--policy /dev/stdin, <(…)) is parsed like a file")
  func policyFromPipeAndDevice() throws {
    let empty = #expect(throws: PolicyParseError.self) { try PolicyYAML.parse(contentsOf: "/dev/null") }
    #expect(empty?.issues.map(\.message) == ["the policy is empty"])
    let pipe = Pipe()
    try pipe.fileHandleForWriting.write(contentsOf: Data("version: 1\nfilesystem_policy:\n  read_only: [/usr]\n".utf8))
    try pipe.fileHandleForWriting.close()
    let parsed = try PolicyYAML.parse(contentsOf: "/proc/self/fd/\(pipe.fileHandleForReading.fileDescriptor)")
    #expect(parsed.policy.version == 1)
    #expect(parsed.policy.filesystem.readOnly == ["/usr"])
  }

  @Test func yamlSyntaxErrorsAreShortAndHoldNoControlCharacters() {
    let reader = parseIssues("version: 1\nfilesystem_policy: \u{07}\u{1B}[2J\n")
    #expect(reader == [PolicyIssue(path: "", line: 2, message: "invalid YAML: control characters are not allowed (character U+0007)")])
    let scanner = parseIssues("version: 1\nfilesystem_policy:\n  read_only: [/usr\n  x: \"\u{0085}y\n")
    #expect(scanner.count == 1 && scanner[0].line != nil && scanner[0].message.hasPrefix("invalid YAML: "), "\(scanner)")
    #expect(!scanner[0].description.contains("read_only") && !scanner[0].description.contains("\n"), "\(scanner)")
    let key = parseIssues("version: 1\n\"a\\nb\\u0001\": 1\n")
    #expect(
      key.map(\.description) == [
        "a\\nb\\u{1} (line 2): unknown field `a\\nb\\u{1}`, expected one of filesystem_policy, landlock, network_policies, process, version"
      ])
    #expect(PolicyYAML.escaped("ab\u{1}\u{2028}cd", limit: 4) == "ab\\u{1}\\u{2028}…")
    #expect(PolicyYAML.escaped("say \"hi\"", limit: 40, quoted: true) == "\"say \\\"hi\\\"\"")
  }

  @Test func restrictiveDefaultIsValid() {
    let d = PolicyRules.restrictiveDefault
    #expect(PolicyRules.safetyIssues(d) == [])
    #expect(PolicyRules.l7Issues(d) == [])
    #expect(PolicyYAML.check(PolicyYAML.render(d)) == [])
  }

  /// `openshell policy example` prints a policy that passes every check and means what its comments say.
  @Test func shippedExampleIsValid() throws {
    let parsed = try PolicyYAML.parse(PolicyExample.yaml)
    let p = parsed.policy
    #expect(parsed.warnings.isEmpty)
    #expect(PolicyRules.safetyIssues(p) == [])
    #expect(PolicyRules.l7Issues(p) == [])
    #expect(p.filesystem.readWrite == ["/sandbox", "/tmp", "/dev/null"])
    #expect(p.landlock.compatibility == "best_effort")
    #expect(p.networkPolicies.keys.sorted() == ["github", "pypi"])
    #expect(p.networkPolicies["github"]?.endpoints.map(\.ports) == [[443], [443]])
    #expect(p.networkPolicies["pypi"]?.endpoints.first?.access == .readOnly)
    // Settable as is on a running sandbox created without --policy (it started with the default's
    // startup-only sections): the same sections, spelled out.
    #expect(PolicyRules.liveUpdateIssues(baseline: PolicyRules.restrictiveDefault, proposed: p) == [])
    #expect(p.filesystem == PolicyRules.restrictiveDefault.filesystem)
  }
}
