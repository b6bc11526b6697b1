#define _GNU_SOURCE
#include "cconfine.h"
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif

static int result(long r) { return r < 0 ? -errno : (int)r; }

int cconfine_landlock_abi(void) {
  return result(syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION));
}

int cconfine_landlock_create_ruleset(uint64_t handled_access_fs) {
  // Only the filesystem member: accepted by every ABI (the size tells the kernel what we pass).
  struct { uint64_t handled_access_fs; } attr = { handled_access_fs };
  return result(syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0));
}

int cconfine_landlock_add_path_rule(int ruleset_fd, int parent_fd, uint64_t allowed_access) {
  struct landlock_path_beneath_attr attr = { .allowed_access = allowed_access, .parent_fd = parent_fd };
  return result(syscall(SYS_landlock_add_rule, ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, &attr, 0));
}

int cconfine_landlock_restrict_self(int ruleset_fd) {
  return result(syscall(SYS_landlock_restrict_self, ruleset_fd, 0));
}

int cconfine_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5) {
  return result(prctl(option, a2, a3, a4, a5));
}

int cconfine_capget(uint64_t *effective, uint64_t *permitted, uint64_t *inheritable) {
  struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
  struct __user_cap_data_struct data[2] = {{0}};
  if (syscall(SYS_capget, &header, data) != 0) return -errno;
  *effective = (uint64_t)data[1].effective << 32 | data[0].effective;
  *permitted = (uint64_t)data[1].permitted << 32 | data[0].permitted;
  *inheritable = (uint64_t)data[1].inheritable << 32 | data[0].inheritable;
  return 0;
}

int cconfine_capset_clear(void) {
  struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
  struct __user_cap_data_struct data[2] = {{0}};
  return result(syscall(SYS_capset, &header, data));
}

int cconfine_open_path(const char *path) { return result(open(path, O_PATH | O_CLOEXEC)); }

int cconfine_setns_net(int fd) { return result(setns(fd, CLONE_NEWNET)); }

int cconfine_pidfd_open(int pid) { return result(syscall(SYS_pidfd_open, pid, 0)); }

int cconfine_pidfd_send_signal(int pidfd, int sig) { return result(syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0)); }

int cconfine_seccomp_set_filter(const void *program, unsigned short instructions) {
  struct sock_fprog fprog = { .len = instructions, .filter = (struct sock_filter *)program };
  return result(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog));
}
