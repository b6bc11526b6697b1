// swift-tools-version:6.1
// The OpenShell gateway in Swift: an event-sourced control plane for agent sandboxes.
// Layout and module responsibilities: README.md.
import PackageDescription

let package = Package(
  name: "openshell-swift",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "openshell", targets: ["CLI"]),
    .executable(name: "openshell-replay", targets: ["Replay"]),
    .executable(name: "openshell-fixtures", targets: ["FixtureGen"]),
    .executable(name: "openshell-bench", targets: ["Bench"]),
    .executable(name: "openshell-log-stress", targets: ["LogStress"]),
    .executable(name: "openshell-loadgen", targets: ["LoadGen"]),
    .executable(name: "openshell-sandbox", targets: ["Supervisor"]),
    .executable(name: "openshell-sandbox-launch", targets: ["SandboxLauncher"]),
    .executable(name: "openshell-sandbox-bench", targets: ["SandboxBench"]),
    .library(name: "EventLog", targets: ["EventLog"]),
    .library(name: "Projections", targets: ["Projections"]),
    .library(name: "Gateway", targets: ["Gateway"]),
  ],
  dependencies: [
    .package(url: "https://github.com/grpc/grpc-swift-2.git", exact: "2.4.3"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", exact: "2.9.2"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", exact: "2.4.1"),
    .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0"),
    .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-nio-ssl.git", exact: "2.37.6"),
    .package(url: "https://github.com/apple/swift-nio-http2.git", exact: "1.46.0"),
    .package(url: "https://github.com/apple/swift-certificates.git", exact: "1.21.1"),
    .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
    .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
    .package(url: "https://github.com/apple/swift-argument-parser.git", exact: "1.8.2"),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
    .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
    // OIDC bearer tokens: JWS verification against the issuer's JWKS (issue 13).
    .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
    // OTLP log export of the audit trail; OTLP/gRPC only (no HTTP client). Exact: the drop accounting reads
    // its diagnostic messages (Sources/Gateway/Audit/OTLPAuditExport.swift).
    .package(url: "https://github.com/swift-otel/swift-otel.git", exact: "1.6.0", traits: ["OTLPGRPC"]),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    // Short-lived child processes that are run to completion (the CLI's ChildProcess, the gateway's
    // ssh-keygen); where it does not fit: docs/DESIGN.md, "Child processes and process lifecycle".
    .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.2"),
    .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
    // AsyncThrowingChannel: the audit watch's bounded read-ahead (one page produced while the previous is sent).
    .package(url: "https://github.com/apple/swift-async-algorithms.git", from: "1.1.4"),
  ],
  targets: [
    // System libraries (Debian: liblmdb-dev, libzstd-dev, libseccomp-dev).
    .systemLibrary(name: "CLMDB", pkgConfig: "lmdb", providers: [.apt(["liblmdb-dev"])]),
    .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
    .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
    // Thin C wrappers for the sandbox launcher (variadic syscall/prctl, capget/capset, Landlock structs).
    .target(name: "CConfine"),
    // The event log's record checksum and chain hash in C: CRC-32C with SSE4.2 `crc32` (checked with cpuid at
    // run time; Swift fallback) and SHA-256 from Debian's OpenSSL libcrypto (libssl-dev), without allocation.
    .target(name: "CLogHash", linkerSettings: [.linkedLibrary("crypto")]),

    // The append-only, LMDB-backed, zstd-compressed event log. Knows no gateway event type.
    .target(
      name: "EventLog",
      dependencies: [
        "CLMDB", "CZstd", "CLogHash",
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Logging", package: "swift-log"),
      ]),

    // Gateway event types (Protos/events.proto, generated), GatewayState and the pure apply function.
    .target(
      name: "Projections",
      dependencies: [
        "EventLog",
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ]),

    // The OpenShell wire contract (openshell 0.1.5 SDK descriptors), generated by Tools/generate-api.sh.
    .target(
      name: "OpenShellAPI",
      dependencies: [
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ]),

    // Scripted scenarios shared by the fixture generator, the tests and the benchmark.
    .target(
      name: "Scenarios",
      dependencies: [
        "EventLog", "Projections", "OpenShellAPI",
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ]),

    // verify / rebuild / state / audit / export / import / restore, as a library.
    .target(
      name: "LogTools",
      dependencies: [
        "EventLog", "Projections", "OpenShellAPI",
        .product(name: "Yams", package: "Yams"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "X509", package: "swift-certificates"),
      ]),

    // The OpenShell policy YAML ↔ SandboxPolicy, and the policy rules (CLI, gateway, supervisor).
    .target(
      name: "PolicyKit",
      dependencies: [
        "OpenShellAPI", .product(name: "Yams", package: "Yams"), .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ]),

    // What the gateway and the in-sandbox supervisor share: protocol constants, process spawning.
    .target(name: "SandboxProtocol", dependencies: ["SandboxConfinement", "CSpawn"]),
    // glibc's posix_spawn file-action extensions (closefrom, chdir), which Swift's Glibc module does not export.
    .target(name: "CSpawn"),
    // glibc's name-service databases pinned to its built-in services (the static supervisor).
    .target(name: "CNameService"),
    // gRPC client transport tuning for relayed byte streams (the supervisor and the CLI's ssh-proxy).
    .target(
      name: "RelayTransport",
      dependencies: ["CMalloc", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl")]),
    // glibc's mallopt (not exported by Swift's Glibc module).
    .target(name: "CMalloc"),

    // Confinement of workload processes (user switch, capabilities, Landlock, installing the compiled
    // seccomp program) and the plan the driver writes; no Foundation and no libseccomp, so that the
    // launcher starts fast.
    .target(name: "SandboxConfinement", dependencies: ["CConfine"]),
    // The workload seccomp filter, compiled with libseccomp (once per supervisor) into the BPF program
    // the launcher installs.
    .target(name: "SandboxSeccomp", dependencies: ["SandboxConfinement", "CSeccomp"]),
    // NETLINK_SOCK_DIAG lookups for the proxy's caller resolution.
    .target(name: "CSockDiag"),
    // A root gateway's per-sandbox network namespace without process starts: rtnetlink through libmnl, the
    // nftables ruleset through libnftables (Debian: libmnl-dev, libnftables-dev).
    .target(name: "CNetSetup", linkerSettings: [.linkedLibrary("mnl"), .linkedLibrary("nftables")]),
    // Pseudo-terminals and window sizes (interactive exec in the supervisor, `sandbox exec -t` in the CLI).
    .target(name: "CTerminal"),
    // `openshell-sandbox-launch`: the launcher the supervisor starts every workload process through.
    // A fully static executable (Swift runtime and glibc linked in): it is started for every exec, and
    // dynamic loading and symbol binding were most of its start-up (openshell-sandbox-bench --launcher).
    .executableTarget(
      name: "SandboxLauncher", dependencies: ["SandboxConfinement"],
      linkerSettings: [.unsafeFlags(["-static-executable"])]),

    // The in-sandbox supervisor `openshell-sandbox`: a gRPC client of the gateway with its own identity.
    .executableTarget(
      name: "Supervisor",
      dependencies: [
        "SandboxProtocol", "SandboxConfinement", "SandboxSeccomp", "CSockDiag", "CTerminal", "CNameService", "OpenShellAPI", "PolicyKit",
        "RelayTransport",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
        .product(name: "Crypto", package: "swift-crypto"),
      ],
      // A fully static executable, like the launcher (issue 14, CreateSandbox → READY): one supervisor starts per
      // sandbox. Loading and binding ~40 shared libraries was ~10 ms of each start; with the Swift runtime linked
      // in (-static-stdlib) the dynamic loader still relocated and bound a 61k-symbol table (~4 ms of CPU, 800
      // page faults, against 2.6 ms and 250 faults static). glibc 2.36 has the files and dns name services built
      // in; the supervisor pins its lookups to them (CNameService), so that no NSS module (and with it the host's
      // shared libc) is loaded whatever the host's nsswitch.conf lists.
      linkerSettings: [
        .unsafeFlags(["-static-executable", "-lCoreFoundation", "-l_FoundationICU", "-l_FoundationCShims", "-l_FoundationCollections", "-lstdc++"])
      ]),

    // The gateway server: one port (TLS, gRPC, HTTP/1.1), PKI, handlers, reactors.
    .target(
      name: "Gateway",
      dependencies: [
        "EventLog", "Projections", "OpenShellAPI", "LogTools", "SandboxProtocol", "SandboxConfinement", "CConfine", "CNetSetup", "PolicyKit",
        "RelayTransport",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOTLS", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "Metrics", package: "swift-metrics"),
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "JWTKit", package: "jwt-kit"),
        .product(name: "OTel", package: "swift-otel"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        .product(name: "Subprocess", package: "swift-subprocess"),
        .product(name: "SystemPackage", package: "swift-system"),
      ]),

    .executableTarget(
      name: "CLI",
      dependencies: [
        "Gateway", "OpenShellAPI", "LogTools", "EventLog", "Projections", "PolicyKit", "SandboxProtocol", "CTerminal", "RelayTransport",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Yams", package: "Yams"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "Subprocess", package: "swift-subprocess"),
        .product(name: "SystemPackage", package: "swift-system"),
      ]),

    .executableTarget(
      name: "Replay",
      dependencies: [
        "LogTools", "EventLog", "Projections", "Gateway",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Tools/replay"),
    .executableTarget(
      name: "FixtureGen",
      dependencies: [
        "Scenarios", "LogTools",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Tools/fixtures"),
    .executableTarget(
      name: "Bench",
      dependencies: [
        "EventLog", "Projections", "Scenarios",
        .product(name: "GRDB", package: "GRDB.swift"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Tools/bench",
      exclude: ["README.md"]),
    .executableTarget(
      name: "LogStress",
      dependencies: ["EventLog"],
      path: "Tools/log-stress"),
    .executableTarget(
      name: "LoadGen",
      dependencies: [
        "Gateway", "OpenShellAPI", "EventLog", "Projections", "SandboxProtocol", "RelayTransport",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
      ],
      path: "Tools/loadgen"),
    .executableTarget(
      name: "SandboxBench",
      dependencies: [
        "Gateway", "OpenShellAPI", "PolicyKit", "SandboxProtocol", "SandboxConfinement", "SandboxSeccomp",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Tools/sandbox-bench"),

    .testTarget(
      name: "EventLogTests",
      dependencies: ["EventLog", "CLMDB", "CLogHash", "LogStress", .product(name: "Crypto", package: "swift-crypto")]),
    .testTarget(name: "ProjectionsTests", dependencies: ["Projections", "Scenarios", "EventLog"]),
    .testTarget(
      name: "LogToolsTests",
      dependencies: [
        "LogTools", "Scenarios", "EventLog", "Projections", .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ]),
    .testTarget(
      name: "GatewayTests",
      dependencies: [
        "Gateway", "OpenShellAPI", "SandboxProtocol", "SandboxConfinement", "SandboxSeccomp", "PolicyKit", "LogTools", "RelayTransport",
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "Crypto", package: "swift-crypto"),
      ]),
    .testTarget(name: "PolicyKitTests", dependencies: ["PolicyKit", "OpenShellAPI"]),
    .testTarget(
      name: "CLITests",
      dependencies: [
        "OpenShellAPI", "SandboxProtocol",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
      ]),
  ],
  swiftLanguageModes: [.v6]
)
