// Thin, non-variadic wrappers over the Linux calls the sandbox launcher needs and Swift cannot call
// directly (variadic `syscall`/`prctl`, raw `capget`/`capset`, Landlock's packed structs).
// No policy lives here: the launcher (Sources/Supervisor/Confinement) decides what to call.
// Every function returns 0 (or a non-negative value) on success and -errno on failure.
#ifndef CCONFINE_H
#define CCONFINE_H
#include <stdint.h>

/// Landlock ABI version of the running kernel (landlock_create_ruleset(NULL, 0, VERSION), syscall 444),
/// or -errno (ENOSYS: not built in; EOPNOTSUPP: built in but disabled at boot).
int cconfine_landlock_abi(void);
/// A new ruleset handling `handled_access_fs`; returns its fd.
int cconfine_landlock_create_ruleset(uint64_t handled_access_fs);
/// Adds a path-beneath rule: `allowed_access` under the inode `parent_fd` (an O_PATH fd).
int cconfine_landlock_add_path_rule(int ruleset_fd, int parent_fd, uint64_t allowed_access);
/// landlock_restrict_self(ruleset_fd, 0) (needs no_new_privs or CAP_SYS_ADMIN).
int cconfine_landlock_restrict_self(int ruleset_fd);

/// prctl(option, a2, a3, a4, a5); returns prctl's result or -errno.
int cconfine_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5);

/// Reads the calling thread's effective/permitted/inheritable sets (64 bits each, capget v3).
int cconfine_capget(uint64_t *effective, uint64_t *permitted, uint64_t *inheritable);
/// Sets effective, permitted and inheritable to empty (capset v3).
int cconfine_capset_clear(void);

/// open(path, O_PATH | O_CLOEXEC): a descriptor naming the inode (for Landlock rules); -errno on failure.
int cconfine_open_path(const char *path);
/// setns(fd, CLONE_NEWNET): enters the network namespace `fd` refers to.
int cconfine_setns_net(int fd);
/// pidfd_open(pid, 0) (Linux ≥ 5.3): a descriptor that keeps naming this process even if its pid is reused; -errno on failure.
int cconfine_pidfd_open(int pid);
/// pidfd_send_signal(pidfd, sig, NULL, 0) (Linux ≥ 5.1): signals exactly the process the pidfd names; -errno on failure.
int cconfine_pidfd_send_signal(int pidfd, int sig);

/// seccomp(SECCOMP_SET_MODE_FILTER, 0, {instructions, program}): installs a classic-BPF program
/// (`instructions` × 8-byte `struct sock_filter`, as libseccomp's seccomp_export_bpf writes it) on the
/// calling thread. Needs no_new_privs (or CAP_SYS_ADMIN).
int cconfine_seccomp_set_filter(const void *program, unsigned short instructions);

#endif
