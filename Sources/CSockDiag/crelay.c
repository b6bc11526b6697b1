#define _GNU_SOURCE
#include "csockdiag.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

// The proxy's byte relay for uninspected connections (see csockdiag.h): splice(2) through a pipe per
// direction, so tunnelled bytes are never copied into the supervisor's memory.

int csockdiag_listen_tcp4(const char *address, uint16_t port) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  if (inet_pton(AF_INET, address, &sa.sin_addr) != 1) return -EINVAL;
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0) return -errno;
  int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 256) != 0) { int e = -errno; close(l); return e; }
  return l;
}

int csockdiag_accept(int listen_fd) {
  for (;;) {
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return fd;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    return -errno;
  }
}

int csockdiag_dial(int family, const uint8_t *address, uint16_t port, int timeout_ms) {
  struct sockaddr_storage ss;
  socklen_t len;
  memset(&ss, 0, sizeof ss);
  if (family == AF_INET) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    memcpy(&s4->sin_addr, address, 4);
    len = sizeof *s4;
  } else if (family == AF_INET6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    memcpy(&s6->sin6_addr, address, 16);
    len = sizeof *s6;
  } else {
    return -EAFNOSUPPORT;
  }
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -errno;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
    if (errno != EINPROGRESS) { int e = -errno; close(fd); return e; }
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    int r;
    do { r = poll(&p, 1, timeout_ms); } while (r < 0 && errno == EINTR);
    if (r == 0) { close(fd); return -ETIMEDOUT; }
    int err = 0;
    socklen_t el = sizeof err;
    if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) { int e = -errno; close(fd); return e; }
    if (err != 0) { close(fd); return -err; }
  }
  return fd;
}

int csockdiag_write_all(int fd, const uint8_t *bytes, size_t count, int timeout_ms) {
  size_t done = 0;
  while (done < count) {
    ssize_t n = send(fd, bytes + done, count - done, MSG_NOSIGNAL);
    if (n > 0) { done += (size_t)n; continue; }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) return -errno;
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    int r;
    do { r = poll(&p, 1, timeout_ms); } while (r < 0 && errno == EINTR);
    if (r <= 0) return r == 0 ? -ETIMEDOUT : -errno;
  }
  return 0;
}

struct csockdiag_relay {
  pthread_mutex_t lock;
  int fds[2];
  int closed, refs;
};

struct csockdiag_relay *csockdiag_relay_new(int a, int b) {
  struct csockdiag_relay *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  pthread_mutex_init(&r->lock, NULL);
  r->fds[0] = a;
  r->fds[1] = b;
  r->refs = 2;
  for (int i = 0; i < 2; i++) fcntl(r->fds[i], F_SETFL, fcntl(r->fds[i], F_GETFL) | O_NONBLOCK);
  return r;
}

void csockdiag_relay_release(struct csockdiag_relay *r) {
  pthread_mutex_lock(&r->lock);
  int left = --r->refs;
  pthread_mutex_unlock(&r->lock);
  if (left == 0) {
    pthread_mutex_destroy(&r->lock);
    free(r);
  }
}

void csockdiag_relay_cancel(struct csockdiag_relay *r) {
  pthread_mutex_lock(&r->lock);
  if (!r->closed) {
    shutdown(r->fds[0], SHUT_RDWR);
    shutdown(r->fds[1], SHUT_RDWR);
  }
  pthread_mutex_unlock(&r->lock);
}

// How many bytes the relay keeps queued toward the client (fds[0]: the sandbox's end, always the local
// hop — veth or the private namespace's loopback — never the network): the pipe per direction and the
// client socket's send buffer (SO_SNDBUF; the kernel doubles it and stops autotuning it, which only
// matters for a long round trip, and the client hop has none). With 1 MiB pipes and the autotuned
// send buffer (up to tcp_wmem's 4 MiB) a 100 MB download queued megabytes between upstream and client:
// both copies of the data (upstream server in, client out) touched colder pages, and the relay sent in
// bursts that the veth reordered (its receive runs on the CPU that transmits; the relay's thread and the
// client's ACKs transmit from two), so the client's TCP saw out-of-order segments and the relay
// retransmitted. Measured (2 cores, upstream on loopback, 2 GB per sample, interleaved): out-of-order
// segments ~450 → ~20, retransmitted ~200 → ~60, CPU of server + relay + client per GB ~0.89 → ~0.71 s,
// rate ~700 → ~1100 MB/s. The upstream socket keeps its autotuned buffers (a far upstream needs them).
enum { RELAY_PIPE_BYTES = 256 << 10, RELAY_CLIENT_SNDBUF = 256 << 10 };

void csockdiag_relay_run(struct csockdiag_relay *r, uint64_t *bytes_ab, uint64_t *bytes_ba) {
  int pipes[2][2] = { { -1, -1 }, { -1, -1 } };
  size_t queued[2] = { 0, 0 }, capacity[2] = { 65536, 65536 };
  uint64_t moved[2] = { 0, 0 };
  int eof[2] = { 0, 0 }, done[2] = { 0, 0 }, failed = 0;
  int sndbuf = RELAY_CLIENT_SNDBUF;
  setsockopt(r->fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);  // best effort: a tuning, not a rule
  for (int d = 0; d < 2; d++) {
    if (pipe2(pipes[d], O_NONBLOCK | O_CLOEXEC) != 0) { failed = 1; break; }
    int size = fcntl(pipes[d][1], F_SETPIPE_SZ, RELAY_PIPE_BYTES);
    if (size > 0) capacity[d] = (size_t)size;
  }
  // Direction d moves bytes from fds[d] to fds[1 - d] through pipes[d].
  while (!failed && !(done[0] && done[1])) {
    for (int d = 0; d < 2 && !failed; d++) {
      int src = r->fds[d], dst = r->fds[1 - d];
      if (!eof[d] && queued[d] < capacity[d]) {
        ssize_t n = splice(src, NULL, pipes[d][1], NULL, capacity[d] - queued[d], SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) queued[d] += (size_t)n;
        else if (n == 0) eof[d] = 1;
        else if (errno != EAGAIN && errno != EINTR) failed = 1;
      }
      if (queued[d] > 0) {
        ssize_t n = splice(pipes[d][0], NULL, dst, NULL, queued[d], SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) { queued[d] -= (size_t)n; moved[d] += (uint64_t)n; }
        else if (n < 0 && errno != EAGAIN && errno != EINTR) failed = 1;
      }
      if (eof[d] && queued[d] == 0 && !done[d]) {
        shutdown(dst, SHUT_WR);
        done[d] = 1;
      }
    }
    if (failed || (done[0] && done[1])) break;
    struct pollfd p[2];
    for (int i = 0; i < 2; i++) {
      // fds[i] is read for direction i and written for direction 1 - i.
      short ev = 0;
      if (!eof[i] && queued[i] < capacity[i]) ev |= POLLIN | POLLRDHUP;
      if (queued[1 - i] > 0) ev |= POLLOUT;
      p[i].fd = ev ? r->fds[i] : -1;
      p[i].events = ev;
      p[i].revents = 0;
    }
    if (p[0].fd < 0 && p[1].fd < 0) break;
    int n = poll(p, 2, -1);
    if (n < 0 && errno != EINTR) failed = 1;
  }
  for (int d = 0; d < 2; d++)
    for (int k = 0; k < 2; k++)
      if (pipes[d][k] >= 0) close(pipes[d][k]);
  pthread_mutex_lock(&r->lock);
  r->closed = 1;
  close(r->fds[0]);
  close(r->fds[1]);
  pthread_mutex_unlock(&r->lock);
  if (bytes_ab) *bytes_ab = moved[0];
  if (bytes_ba) *bytes_ba = moved[1];
  csockdiag_relay_release(r);
}

int csockdiag_name_thread(const char *name) { return pthread_setname_np(pthread_self(), name); }
