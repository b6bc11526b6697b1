// Thin wrappers over NETLINK_SOCK_DIAG (inet_diag) for the supervisor's proxy caller resolution
// (Sources/Supervisor/Network/CallerResolver.swift): an exact TCP socket lookup by 4-tuple in a
// network namespace. No policy lives here. Every function returns 0 (or a descriptor) on success and
// -errno on failure.
#ifndef CSOCKDIAG_H
#define CSOCKDIAG_H
#include <stdint.h>

/// A NETLINK_SOCK_DIAG socket created inside the network namespace `netns_fd` (a short-lived thread
/// enters it, so the caller's namespace never changes); the socket stays bound to that namespace.
/// Needs CAP_SYS_ADMIN. Returns the descriptor (close-on-exec).
int csockdiag_open_in_netns(int netns_fd);

/// Looks up the TCP socket whose local end is `src`:`sport` and remote end `dst`:`dport` (ports in
/// host order; addresses 4 bytes for AF_INET, 16 for AF_INET6, network order) with an exact
/// SOCK_DIAG_BY_FAMILY request (no dump). The answer must name exactly that 4-tuple and not be a
/// listening socket; then `*inode` and `*uid` are set. -ENOENT: no such socket (or no tcp_diag).
int csockdiag_tcp_lookup(int fd, int family, const uint8_t *src, uint16_t sport, const uint8_t *dst, uint16_t dport,
                         uint32_t *inode, uint32_t *uid);

/// A private network namespace for the sandbox's workloads when the supervisor has no root on the host
/// (its capabilities are those of bubblewrap's user namespace): a new thread unshares CLONE_NEWNET,
/// brings `lo` up, binds a listening TCP socket to 127.0.0.1:`port` and opens a NETLINK_SOCK_DIAG
/// socket, both inside the new namespace, and then stays parked in it for the life of the process
/// (every signal blocked), so that `/proc/<pid>/task/<tid>/ns/net` names the namespace. Needs
/// CAP_SYS_ADMIN and CAP_NET_ADMIN in the current user namespace. On success `*listen_fd` (bound, listening),
/// `*diag_fd` (-errno when the kernel has no sock_diag) and `*tid` are set; close-on-exec descriptors.
int csockdiag_private_netns(uint16_t port, int *listen_fd, int *diag_fd, int *tid);

/// prctl(PR_SET_DUMPABLE, dumpable) for the calling process (the supervisor without root makes itself
/// non-dumpable: its workloads run as the same user).
int csockdiag_set_dumpable(int dumpable);

#endif
