// The named network namespace (what `ip netns add` / `ip netns del` do) and its nftables ruleset (libnftables).
#define _GNU_SOURCE
#include "cnetsetup.h"
#include "internal.h"
#include <errno.h>
#include <fcntl.h>
#include <nftables/libnftables.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

/// Runs `body(arg)` on a new thread (every signal blocked) and waits for it: the thread that changes its
/// network namespace is never one the caller's runtime could reuse. 0 or -errno of pthread_create.
static int on_new_thread(void *(*body)(void *), void *arg) {
  pthread_t t;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);  // inherited by the new thread
  int r = pthread_create(&t, NULL, body, arg);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (r != 0) return -r;
  pthread_join(t, NULL);
  return 0;
}

/// Makes `dir` a shared mount point as iproute2 does, so that a namespace unmounted in one mount namespace
/// is unmounted in every other: `mount --make-rshared`, and when that fails because `dir` is no mount point,
/// a recursive bind mount of `dir` onto itself first (once).
static int share_dir(const char *dir, char *err, size_t errlen) {
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "create %s: %s", dir, strerror(errno));
    return -errno;
  }
  int bound = 0;
  while (mount("", dir, "none", MS_SHARED | MS_REC, NULL) != 0) {
    int e = errno;
    if (e != EINVAL || bound) {
      snprintf(err, errlen, "make %s a shared mount: %s", dir, strerror(e));
      return -e;
    }
    if (mount(dir, dir, "none", MS_BIND | MS_REC, NULL) != 0) {
      e = errno;
      snprintf(err, errlen, "bind-mount %s onto itself: %s", dir, strerror(e));
      return -e;
    }
    bound = 1;
  }
  return 0;
}

struct create_args {
  struct cnetsetup_netns *ns;
  int mounted, result;
  const char *step;
};

static void *create_thread(void *p) {
  struct create_args *a = p;
  if (unshare(CLONE_NEWNET) != 0) {
    a->result = -errno;
    a->step = "unshare(CLONE_NEWNET)";
    return NULL;
  }
  if (mount("/proc/thread-self/ns/net", a->ns->path, "none", MS_BIND, NULL) != 0) {
    a->result = -errno;
    a->step = "bind-mount the namespace onto its file";
    return NULL;
  }
  a->mounted = 1;
  a->ns->ns_fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (a->ns->ns_fd < 0) {
    a->result = -errno;
    a->step = "open the namespace";
    return NULL;
  }
  a->result = cnetsetup_rtnl_open(&a->ns->inner);
  if (a->result != 0) a->step = "open rtnetlink in the namespace";
  return NULL;
}

struct cnetsetup_netns *cnetsetup_netns_create(const char *dir, const char *name, char *err, size_t errlen) {
  if (strchr(name, '/') != NULL || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || name[0] == 0) {
    snprintf(err, errlen, "invalid namespace name");
    return NULL;
  }
  if (share_dir(dir, err, errlen) != 0) return NULL;
  struct cnetsetup_netns *ns = calloc(1, sizeof *ns);
  if (ns == NULL || asprintf(&ns->path, "%s/%s", dir, name) < 0) {
    free(ns);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  ns->ns_fd = -1;
  int fd = open(ns->path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "create %s: %s", ns->path, strerror(errno));
    free(ns->path);
    free(ns);
    return NULL;
  }
  close(fd);
  struct create_args a = {.ns = ns};
  int r = cnetsetup_rtnl_open(&ns->host);
  if (r != 0) {
    a.step = "open rtnetlink";
    a.result = r;
  } else if ((r = on_new_thread(create_thread, &a)) != 0) {
    a.step = "start a thread";
    a.result = r;
  }
  if (a.result == 0) return ns;
  snprintf(err, errlen, "%s: %s", a.step, strerror(-a.result));
  if (a.mounted) umount2(ns->path, MNT_DETACH);
  unlink(ns->path);
  cnetsetup_netns_close(ns);
  return NULL;
}

struct nft_args {
  int ns_fd, result;
  const char *ruleset;
  char *err;
  size_t errlen;
};

static void *nft_thread(void *p) {
  struct nft_args *a = p;
  if (setns(a->ns_fd, CLONE_NEWNET) != 0) {
    a->result = -errno;
    snprintf(a->err, a->errlen, "enter the namespace: %s", strerror(errno));
    return NULL;
  }
  struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (ctx == NULL) {
    a->result = -ENOMEM;
    snprintf(a->err, a->errlen, "libnftables: cannot create a context");
    return NULL;
  }
  nft_ctx_buffer_output(ctx);
  nft_ctx_buffer_error(ctx);
  if (nft_run_cmd_from_buffer(ctx, a->ruleset) != 0) {
    const char *text = nft_ctx_get_error_buffer(ctx);
    size_t n = text != NULL ? strlen(text) : 0;
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' ')) n--;
    if (n == 0) text = "libnftables failed without a message", n = strlen(text);
    snprintf(a->err, a->errlen, "%.*s", (int)n, text);
    a->result = -EINVAL;
  }
  nft_ctx_free(ctx);
  return NULL;  // the thread ends inside the namespace: nothing else ever runs on it
}

int cnetsetup_nft_load(struct cnetsetup_netns *ns, const char *ruleset, char *err, size_t errlen) {
  struct nft_args a = {.ns_fd = ns->ns_fd, .ruleset = ruleset, .err = err, .errlen = errlen};
  int r = on_new_thread(nft_thread, &a);
  if (r != 0) {
    snprintf(err, errlen, "start a thread: %s", strerror(-r));
    return r;
  }
  return a.result;
}

void cnetsetup_netns_close(struct cnetsetup_netns *ns) {
  if (ns == NULL) return;
  if (ns->inner != NULL) mnl_socket_close(ns->inner);
  if (ns->host != NULL) mnl_socket_close(ns->host);
  if (ns->ns_fd >= 0) close(ns->ns_fd);
  free(ns->path);
  free(ns);
}

int cnetsetup_netns_remove(const char *path) {
  umount2(path, MNT_DETACH);
  return unlink(path) == 0 ? 0 : -errno;
}
