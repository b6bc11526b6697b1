/// A commented example of the OpenShell sandbox policy YAML, printed by `openshell policy example`.
///
/// It is a valid policy (the tests parse it and run the gateway's and the supervisor's checks on it),
/// so users can start from it: `openshell policy example > policy.yaml`.
public enum PolicyExample {
  /// The example policy text (YAML with comments, schema version 1).
  public static let yaml = """
    # OpenShell sandbox policy (schema version 1).
    # Apply at creation:  openshell sandbox create --policy policy.yaml -- CMD
    # Change it live:     edit network_policies, then openshell policy set NAME --policy policy.yaml --wait
    # filesystem_policy, landlock and process are fixed when a sandbox starts: a running sandbox refuses
    # changes to them (sandbox stop + sandbox start applies them), so a live change keeps them as the
    # sandbox started with them. network_policies change at any time.
    # The three sections below are the built-in default that a sandbox created without --policy starts
    # with, so this file can be set as is on such a sandbox; for a sandbox created with its own policy,
    # keep that policy's filesystem_policy, landlock and process instead.
    version: 1

    # Landlock: paths the agent may read (read_only) or read and write (read_write). Everything else
    # is refused. include_workdir adds the sandbox's working directory (/sandbox) as read-write.
    filesystem_policy:
      include_workdir: true
      read_only: [/usr, /lib, /proc, /dev/urandom, /app, /etc, /var/log]
      read_write: [/sandbox, /tmp, /dev/null]

    # best_effort: run without filesystem limits (recorded loudly) where the kernel has no Landlock;
    # hard_requirement: refuse to start the sandbox there instead.
    landlock:
      compatibility: best_effort

    # The agent's user and group (only "sandbox" is accepted).
    process:
      run_as_user: sandbox
      run_as_group: sandbox

    # Egress. A connection through the sandbox's proxy is allowed when one entry matches its host,
    # port and calling binary; everything else is denied and logged.
    network_policies:
      github:
        name: github
        # Which programs may use these endpoints (globs: * one path segment, ** any depth).
        binaries:
          - path: /usr/bin/git
          - path: /usr/bin/curl
        endpoints:
          # Plain TLS passthrough (L4): host and port only.
          - host: github.com
            port: 443
          # Exactly one label under the domain (api.github.com, not a.b.github.com).
          - host: "*.githubusercontent.com"
            port: 443
      pypi:
        name: pypi
        binaries:
          - path: /usr/bin/python3*
          - path: "/usr/local/bin/**"
        endpoints:
          # L7: the proxy terminates TLS with the sandbox's CA and checks every request's method and path
          # (access or rules; deny_rules win); `tls: skip` tunnels without inspection.
          - host: pypi.org
            port: 443
            protocol: rest
            access: read-only          # GET, HEAD, OPTIONS
          - host: files.pythonhosted.org
            port: 443
            protocol: rest
            rules:
              - allow:
                  method: GET
                  path: "/packages/**"
    """
}
