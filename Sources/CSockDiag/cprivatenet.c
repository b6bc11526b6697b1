#define _GNU_SOURCE
#include "csockdiag.h"
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

// The sandbox's private network namespace for a supervisor without root (see csockdiag.h). One thread
// creates it and stays in it for the life of the process (its /proc/<pid>/task/<tid>/ns/net names the
// namespace); no other thread ever changes namespace.

struct private_args {
  uint16_t port;
  int listen_fd, diag_fd, result;
  pid_t tid;
  int done;
  pthread_mutex_t lock;
  pthread_cond_t cond;
};

static int setup(struct private_args *a) {
  if (unshare(CLONE_NEWNET) != 0) return -errno;
  // Loopback up: the namespace's only interface.
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -errno;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) { int e = -errno; close(s); return e; }
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) { int e = -errno; close(s); return e; }
  close(s);
  // The proxy's listening socket, bound inside the namespace at 127.0.0.1:port.
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0) return -errno;
  int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(a->port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 256) != 0) { int e = -errno; close(l); return e; }
  // The caller-resolution socket, inside the namespace too.
  int d = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (d >= 0) {
    struct timeval timeout = { .tv_sec = 1 };
    setsockopt(d, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }
  a->listen_fd = l;
  a->diag_fd = d < 0 ? -errno : d;
  a->tid = (pid_t)syscall(SYS_gettid);
  return 0;
}

static void *private_thread(void *p) {
  struct private_args *a = p;
  // Signals go to the other threads; this one only holds the namespace.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  int r = setup(a);
  pthread_mutex_lock(&a->lock);
  a->result = r;
  a->done = 1;
  pthread_cond_signal(&a->cond);
  pthread_mutex_unlock(&a->lock);
  if (r != 0) return NULL;
  for (;;) pause();
  return NULL;
}

int csockdiag_private_netns(uint16_t port, int *listen_fd, int *diag_fd, int *tid) {
  static struct private_args a;  // lives as long as the holding thread (the process)
  memset(&a, 0, sizeof a);
  a.port = port;
  a.listen_fd = -1;
  a.diag_fd = -1;
  pthread_mutex_init(&a.lock, NULL);
  pthread_cond_init(&a.cond, NULL);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_t t;
  int r = pthread_create(&t, &attr, private_thread, &a);
  pthread_attr_destroy(&attr);
  if (r != 0) return -r;
  pthread_mutex_lock(&a.lock);
  while (!a.done) pthread_cond_wait(&a.cond, &a.lock);
  pthread_mutex_unlock(&a.lock);
  if (a.result != 0) return a.result;
  *listen_fd = a.listen_fd;
  *diag_fd = a.diag_fd;
  *tid = a.tid;
  return 0;
}

#include <sys/prctl.h>

int csockdiag_set_dumpable(int dumpable) {
  return prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0) == 0 ? 0 : -errno;
}
