// Thin wrappers over NETLINK_SOCK_DIAG (inet_diag) for the supervisor's proxy caller resolution
// (Sources/Supervisor/Network/CallerResolver.swift): an exact TCP socket lookup by 4-tuple in a
// network namespace. No policy lives here. Every function returns 0 (or a descriptor) on success and
// -errno on failure.
#ifndef CSOCKDIAG_H
#define CSOCKDIAG_H
#include <stddef.h>
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

/// A listening IPv4 TCP socket bound to `address`:`port` (SO_REUSEADDR, backlog 256). Returns it or -errno.
int csockdiag_listen_tcp4(const char *address, uint16_t port);

/// accept4(2) (close-on-exec, blocking; EINTR/ECONNABORTED retried), TCP_NODELAY on the new socket.
int csockdiag_accept(int listen_fd);

/// A TCP connection to `address` (4 or 16 bytes by `family`, network order):`port` within `timeout_ms`;
/// the socket is non-blocking, close-on-exec, TCP_NODELAY. Returns it or -errno (-ETIMEDOUT).
int csockdiag_dial(int family, const uint8_t *address, uint16_t port, int timeout_ms);

/// Writes all `count` bytes to `fd` (blocking or not), waiting at most `timeout_ms` per stall. 0 or -errno.
int csockdiag_write_all(int fd, const uint8_t *bytes, size_t count, int timeout_ms);

/// A relay between two connected sockets (it owns both descriptors from now on): `a` is the client's
/// end (the sandbox's local hop; the relay bounds what it queues toward it, see crelay.c), `b` the
/// upstream's. Two references: one for csockdiag_relay_run, one for the caller (csockdiag_relay_release).
struct csockdiag_relay;
struct csockdiag_relay *csockdiag_relay_new(int a, int b);
/// Moves bytes both ways with splice(2) through a pipe per direction (never through user memory) until
/// both directions ended (each end's EOF is passed on with shutdown(SHUT_WR)) or one fails; then closes
/// both sockets, reports the bytes moved a→b and b→a and drops its reference. Blocks the calling thread.
void csockdiag_relay_run(struct csockdiag_relay *r, uint64_t *bytes_ab, uint64_t *bytes_ba);
/// Ends a running relay (shutdown of both sockets), unless it already closed them. Thread-safe.
void csockdiag_relay_cancel(struct csockdiag_relay *r);
void csockdiag_relay_release(struct csockdiag_relay *r);
/// Names the calling thread (`/proc/<pid>/task/<tid>/comm`, at most 15 bytes). 0 or an errno value.
int csockdiag_name_thread(const char *name);

/// A TCP connection to 127.0.0.1:`port` inside the network namespace `netns_fd` (a short-lived thread
/// enters it and connects; the socket stays in that namespace), with TCP_NODELAY. Used for exposed
/// services (the supervisor reaches a sandbox's loopback service). Needs CAP_SYS_ADMIN. Returns the
/// connected descriptor (close-on-exec); -ECONNREFUSED when nothing listens there.
int csockdiag_connect_loopback_in_netns(int netns_fd, uint16_t port);

#endif
