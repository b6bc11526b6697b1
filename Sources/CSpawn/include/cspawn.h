#ifndef CSPAWN_H
#define CSPAWN_H

#include <spawn.h>

/// glibc's posix_spawn file-action extensions, which Swift's Glibc module does not export (they need
/// _GNU_SOURCE). Called directly rather than looked up with dlsym: a fully static executable (the
/// supervisor) has no dynamic symbol table to look them up in.

/// posix_spawn_file_actions_addclosefrom_np (glibc ≥ 2.34): close every descriptor ≥ `from` in the child.
/// Returns 0 or an errno value (as the glibc function).
int cspawn_add_close_from(posix_spawn_file_actions_t *actions, int from);

/// posix_spawn_file_actions_addchdir_np (glibc ≥ 2.29): chdir to `path` in the child before exec.
/// Returns 0 or an errno value (as the glibc function).
int cspawn_add_chdir(posix_spawn_file_actions_t *actions, const char *path);

#endif
