// Shared by cnetns.c and crtnl.c; not part of the module's interface.
#ifndef CNETSETUP_INTERNAL_H
#define CNETSETUP_INTERNAL_H
#include <libmnl/libmnl.h>

struct cnetsetup_netns {
  char *path;                // the bind-mounted namespace file
  int ns_fd;                 // the namespace (IFLA_NET_NS_FD for the veth peer, setns for nft)
  struct mnl_socket *host;   // rtnetlink in the caller's namespace
  struct mnl_socket *inner;  // rtnetlink in the new namespace (opened there; stays bound to it)
};

/// An rtnetlink socket in the calling thread's network namespace (close-on-exec, bound). 0 or -errno.
int cnetsetup_rtnl_open(struct mnl_socket **out);

#endif
