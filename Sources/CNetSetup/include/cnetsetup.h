// A root gateway's per-sandbox network namespace, set up in-process (issue 14: five `ip`/`nft` process starts
// were ~21 ms of create → READY): what `ip netns add`, `ip link add … type veth peer … netns`, `ip addr add`,
// `ip link set … up`, `ip route add default via` and `nft -f` do, with rtnetlink through Debian's libmnl and the
// ruleset through Debian's libnftables. The policy (names, addresses, ruleset text) lives in
// Sources/Gateway/Compute/SandboxNetwork.swift; nothing here decides anything.
//
// Threads: no calling thread ever changes its network namespace. The namespace is created by a thread made for
// it (unshare, bind mount, then it exits), and the ruleset is loaded by another new thread that enters the
// namespace with setns(2) and exits; rtnetlink requests for the namespace go through a netlink socket opened
// inside it. Errors are returned as -errno with a message in `err` that names the step.
#ifndef CNETSETUP_H
#define CNETSETUP_H
#include <stddef.h>
#include <stdint.h>

/// A namespace being set up: its bind-mounted file, a descriptor of it, and rtnetlink sockets on both sides.
struct cnetsetup_netns;

/// What `ip netns add NAME` does with `dir` as iproute2's /run/netns: creates `dir` (0755) when missing and
/// makes it a shared mount point (bind-mounting it onto itself first when it is not a mount point), creates
/// `dir`/`name` (O_EXCL: an existing file is an error and is left alone), and bind-mounts a new network
/// namespace onto it. Then opens rtnetlink sockets in the caller's namespace and in the new one. On failure
/// nothing is left behind (the file is removed), NULL is returned and `err` says why.
struct cnetsetup_netns *cnetsetup_netns_create(const char *dir, const char *name, char *err, size_t errlen);

/// Creates the veth pair `host` (in the caller's namespace) / `peer` (created directly in the namespace), both
/// with `mtu`; both ends down. Returns 0 or -errno: -EEXIST when an interface named `host` exists.
int cnetsetup_veth_add(struct cnetsetup_netns *ns, const char *host, const char *peer, uint32_t mtu);

/// Addresses and routes: `host_addr`/`prefix` on `host` and `host` up (caller's namespace); in the namespace
/// `lo` up, `sandbox_addr`/`prefix` on `peer`, `peer` up and the default route via `host_addr`. IPv4 dotted quads.
/// Returns 0 or -errno with `err` naming the failed step.
int cnetsetup_configure(struct cnetsetup_netns *ns, const char *host, const char *peer, const char *host_addr,
                        const char *sandbox_addr, unsigned prefix, char *err, size_t errlen);

/// Loads the nftables `ruleset` (nft's language, as for `nft -f`) into the namespace with libnftables. Returns
/// 0, or -EINVAL with libnftables' error text in `err` (or -errno when the loading thread could not run).
int cnetsetup_nft_load(struct cnetsetup_netns *ns, const char *ruleset, char *err, size_t errlen);

/// Closes the descriptors and frees `ns`; the namespace stays (bound at its file) until removed.
void cnetsetup_netns_close(struct cnetsetup_netns *ns);

/// What `ip netns del` does with a namespace file: a lazy unmount (MNT_DETACH) and unlink. 0 or -errno of the
/// unlink (-ENOENT: there was none). The namespace itself, and a veth pair with an end in it, goes when its
/// last reference (file, process, descriptor) does.
int cnetsetup_netns_remove(const char *path);

#endif
