#define _GNU_SOURCE
#include "csockdiag.h"
#include <arpa/inet.h>
#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct open_args { int netns_fd; int result; };

static void *open_thread(void *p) {
  struct open_args *a = p;
  // Only this thread enters the namespace; it ends right after, the socket keeps the namespace.
  if (setns(a->netns_fd, CLONE_NEWNET) != 0) { a->result = -errno; return NULL; }
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) { a->result = -errno; return NULL; }
  // The kernel always answers a request; the timeout only bounds a lost answer.
  struct timeval timeout = { .tv_sec = 1 };
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  a->result = fd;
  return NULL;
}

int csockdiag_open_in_netns(int netns_fd) {
  struct open_args a = { netns_fd, -EINVAL };
  pthread_t t;
  int r = pthread_create(&t, NULL, open_thread, &a);
  if (r != 0) return -r;
  pthread_join(t, NULL);
  return a.result;
}

int csockdiag_tcp_lookup(int fd, int family, const uint8_t *src, uint16_t sport, const uint8_t *dst, uint16_t dport,
                         uint32_t *inode, uint32_t *uid) {
  if (family != AF_INET && family != AF_INET6) return -EAFNOSUPPORT;
  size_t alen = family == AF_INET ? 4 : 16;
  static uint32_t sequence;
  uint32_t seq = __atomic_add_fetch(&sequence, 1, __ATOMIC_RELAXED);
  struct { struct nlmsghdr nlh; struct inet_diag_req_v2 req; } msg;
  memset(&msg, 0, sizeof msg);
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST;
  msg.nlh.nlmsg_seq = seq;
  msg.req.sdiag_family = (uint8_t)family;
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = ~0U;
  msg.req.id.idiag_sport = htons(sport);
  msg.req.id.idiag_dport = htons(dport);
  memcpy(msg.req.id.idiag_src, src, alen);
  memcpy(msg.req.id.idiag_dst, dst, alen);
  msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  ssize_t n;
  do { n = sendto(fd, &msg, sizeof msg, 0, (struct sockaddr *)&kernel, sizeof kernel); } while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  // One answer (an inet_diag_msg with attributes, or an error); skip stale answers of other requests.
  for (;;) {
    union { struct nlmsghdr nlh; char bytes[8192]; } buf;
    do { n = recv(fd, &buf, sizeof buf, 0); } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    for (struct nlmsghdr *h = &buf.nlh; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_seq != seq) continue;
      if (h->nlmsg_type == NLMSG_ERROR) {
        struct nlmsgerr *e = NLMSG_DATA(h);
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof *e)) return -EPROTO;
        return e->error < 0 ? e->error : -ENOENT;
      }
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg))) return -EPROTO;
      struct inet_diag_msg *m = NLMSG_DATA(h);
      if (m->idiag_family != family || m->idiag_state == TCP_LISTEN || m->id.idiag_sport != htons(sport) ||
          m->id.idiag_dport != htons(dport) || memcmp(m->id.idiag_src, src, alen) != 0 ||
          memcmp(m->id.idiag_dst, dst, alen) != 0)
        return -ENOENT;
      *inode = m->idiag_inode;
      *uid = m->idiag_uid;
      return 0;
    }
  }
}

struct connect_args { int netns_fd; uint16_t port; int result; };

static void *connect_thread(void *p) {
  struct connect_args *a = p;
  if (setns(a->netns_fd, CLONE_NEWNET) != 0) { a->result = -errno; return NULL; }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) { a->result = -errno; return NULL; }
  struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(a->port) };
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) { a->result = -errno; close(fd); return NULL; }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  a->result = fd;
  return NULL;
}

int csockdiag_connect_loopback_in_netns(int netns_fd, uint16_t port) {
  struct connect_args a = { netns_fd, port, -EINVAL };
  pthread_t t;
  int r = pthread_create(&t, NULL, connect_thread, &a);
  if (r != 0) return -r;
  pthread_join(t, NULL);
  return a.result;
}
