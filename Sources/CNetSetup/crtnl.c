// rtnetlink requests with libmnl: the veth pair, addresses, links up, the default route (what `ip link add`,
// `ip addr add`, `ip link set up` and `ip route add` send; attribute for attribute, as strace shows them).
#define _GNU_SOURCE
#include "cnetsetup.h"
#include "internal.h"
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int cnetsetup_rtnl_open(struct mnl_socket **out) {
  struct mnl_socket *s = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
  if (s == NULL) return -errno;
  if (mnl_socket_bind(s, 0, MNL_SOCKET_AUTOPID) < 0) {
    int e = -errno;
    mnl_socket_close(s);
    return e;
  }
  *out = s;
  return 0;
}

/// Sends one request (NLM_F_ACK added) and reads until its acknowledgement; `cb` (may be NULL) sees the
/// answer's data messages. 0, or -errno from the kernel's error answer (or from the socket).
static int talk(struct mnl_socket *s, struct nlmsghdr *nlh, mnl_cb_t cb, void *data) {
  static atomic_uint sequence;
  nlh->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
  nlh->nlmsg_seq = atomic_fetch_add(&sequence, 1) + 1;
  if (mnl_socket_sendto(s, nlh, nlh->nlmsg_len) < 0) return -errno;
  char buf[16384];
  unsigned portid = mnl_socket_get_portid(s);
  for (;;) {
    ssize_t n = mnl_socket_recvfrom(s, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    errno = 0;
    int r = mnl_cb_run(buf, (size_t)n, nlh->nlmsg_seq, portid, cb, data);
    if (r == MNL_CB_ERROR) return errno != 0 ? -errno : -EPROTO;
    if (r == MNL_CB_STOP) return 0;
  }
}

static struct nlmsghdr *header(char *buf, uint16_t type, uint16_t flags) {
  struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
  nlh->nlmsg_type = type;
  nlh->nlmsg_flags = flags;
  return nlh;
}

int cnetsetup_veth_add(struct cnetsetup_netns *ns, const char *host, const char *peer, uint32_t mtu) {
  if (strlen(host) >= IFNAMSIZ || strlen(peer) >= IFNAMSIZ) return -EINVAL;
  char buf[1024];
  struct nlmsghdr *nlh = header(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof *ifi);
  ifi->ifi_family = AF_UNSPEC;
  mnl_attr_put_u32(nlh, IFLA_MTU, mtu);
  mnl_attr_put_strz(nlh, IFLA_IFNAME, host);
  struct nlattr *info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
  mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
  struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
  struct nlattr *other = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
  // The peer's attributes follow an ifinfomsg of its own.
  memset(mnl_nlmsg_get_payload_tail(nlh), 0, sizeof(struct ifinfomsg));
  nlh->nlmsg_len += MNL_ALIGN(sizeof(struct ifinfomsg));
  mnl_attr_put_u32(nlh, IFLA_MTU, mtu);
  mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, (uint32_t)ns->ns_fd);
  mnl_attr_put_strz(nlh, IFLA_IFNAME, peer);
  mnl_attr_nest_end(nlh, other);
  mnl_attr_nest_end(nlh, data);
  mnl_attr_nest_end(nlh, info);
  return talk(ns->host, nlh, NULL, NULL);
}

static int index_cb(const struct nlmsghdr *nlh, void *data) {
  if (nlh->nlmsg_type == RTM_NEWLINK) {
    const struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
    *(int *)data = ifi->ifi_index;
  }
  return MNL_CB_OK;
}

/// The index of interface `name` in the socket's namespace (RTM_GETLINK by name). >0 or -errno.
static int link_index(struct mnl_socket *s, const char *name) {
  char buf[256];
  struct nlmsghdr *nlh = header(buf, RTM_GETLINK, 0);
  struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof *ifi);
  ifi->ifi_family = AF_UNSPEC;
  mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
  int index = 0;
  int r = talk(s, nlh, index_cb, &index);
  if (r != 0) return r;
  return index > 0 ? index : -ENODEV;
}

static int link_up(struct mnl_socket *s, int index) {
  char buf[256];
  struct nlmsghdr *nlh = header(buf, RTM_NEWLINK, 0);
  struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof *ifi);
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = index;
  ifi->ifi_flags = IFF_UP;
  ifi->ifi_change = IFF_UP;
  return talk(s, nlh, NULL, NULL);
}

static int addr_add(struct mnl_socket *s, int index, struct in_addr address, unsigned prefix) {
  char buf[256];
  struct nlmsghdr *nlh = header(buf, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
  struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof *ifa);
  ifa->ifa_family = AF_INET;
  ifa->ifa_prefixlen = (unsigned char)prefix;
  ifa->ifa_scope = RT_SCOPE_UNIVERSE;
  ifa->ifa_index = (unsigned)index;
  mnl_attr_put(nlh, IFA_LOCAL, sizeof address, &address);
  mnl_attr_put(nlh, IFA_ADDRESS, sizeof address, &address);
  return talk(s, nlh, NULL, NULL);
}

static int default_route(struct mnl_socket *s, struct in_addr gateway) {
  char buf[256];
  struct nlmsghdr *nlh = header(buf, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
  struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof *rtm);
  rtm->rtm_family = AF_INET;
  rtm->rtm_table = RT_TABLE_MAIN;
  rtm->rtm_protocol = RTPROT_BOOT;
  rtm->rtm_scope = RT_SCOPE_UNIVERSE;
  rtm->rtm_type = RTN_UNICAST;
  mnl_attr_put(nlh, RTA_GATEWAY, sizeof gateway, &gateway);
  return talk(s, nlh, NULL, NULL);
}

/// Reports a failed step: `err` gets "<step>: <strerror>", the result is `r` (-errno).
static int fail(int r, char *err, size_t errlen, const char *step, const char *what) {
  snprintf(err, errlen, "%s %s: %s", step, what, strerror(-r));
  return r;
}

int cnetsetup_configure(struct cnetsetup_netns *ns, const char *host, const char *peer, const char *host_addr,
                        const char *sandbox_addr, unsigned prefix, char *err, size_t errlen) {
  struct in_addr h, sb;
  if (prefix > 32 || inet_pton(AF_INET, host_addr, &h) != 1 || inet_pton(AF_INET, sandbox_addr, &sb) != 1) {
    snprintf(err, errlen, "invalid addresses %s, %s/%u", host_addr, sandbox_addr, prefix);
    return -EINVAL;
  }
  char what[96];
  snprintf(what, sizeof what, "%s/%u to %s", host_addr, prefix, host);
  int hi = link_index(ns->host, host);
  if (hi < 0) return fail(hi, err, errlen, "find", host);
  int r = addr_add(ns->host, hi, h, prefix);
  if (r != 0) return fail(r, err, errlen, "add", what);
  if ((r = link_up(ns->host, hi)) != 0) return fail(r, err, errlen, "set up", host);
  int lo = link_index(ns->inner, "lo");
  if (lo < 0) return fail(lo, err, errlen, "find", "lo");
  if ((r = link_up(ns->inner, lo)) != 0) return fail(r, err, errlen, "set up", "lo");
  int pi = link_index(ns->inner, peer);
  if (pi < 0) return fail(pi, err, errlen, "find", peer);
  snprintf(what, sizeof what, "%s/%u to %s", sandbox_addr, prefix, peer);
  if ((r = addr_add(ns->inner, pi, sb, prefix)) != 0) return fail(r, err, errlen, "add", what);
  if ((r = link_up(ns->inner, pi)) != 0) return fail(r, err, errlen, "set up", peer);
  snprintf(what, sizeof what, "route via %s", host_addr);
  if ((r = default_route(ns->inner, h)) != 0) return fail(r, err, errlen, "add the default", what);
  return 0;
}
