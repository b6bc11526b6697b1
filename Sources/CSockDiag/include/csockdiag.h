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

/// A TCP connection to 127.0.0.1:`port` inside the network namespace `netns_fd` (a short-lived thread
/// enters it and connects; the socket stays in that namespace), with TCP_NODELAY. Used for exposed
/// services (the supervisor reaches a sandbox's loopback service). Needs CAP_SYS_ADMIN. Returns the
/// connected descriptor (close-on-exec); -ECONNREFUSED when nothing listens there.
int csockdiag_connect_loopback_in_netns(int netns_fd, uint16_t port);

#endif
