// Thin wrappers over the pseudo-terminal calls Swift cannot make directly (variadic ioctl) for
// interactive exec (Sources/Supervisor/InteractiveExec.swift) and the CLI's `sandbox exec -t`.
// No policy lives here. Every function returns 0 (or a descriptor) on success and -errno on failure.
#ifndef CTERMINAL_H
#define CTERMINAL_H
#include <stddef.h>

/// A new pseudo-terminal pair from /dev/ptmx: returns the master descriptor (O_RDWR, O_NOCTTY,
/// close-on-exec) and writes the slave's path (e.g. `/dev/pts/3`) into `name` (`name_len` bytes).
/// The window size is set to `cols` × `rows` before anyone opens the slave.
int cterminal_open_pty(char *name, size_t name_len, unsigned short cols, unsigned short rows);

/// ioctl(fd, TIOCSWINSZ): sets the window size (the kernel signals SIGWINCH to the foreground group).
int cterminal_set_size(int fd, unsigned short cols, unsigned short rows);

/// ioctl(fd, TIOCGWINSZ): the terminal's window size.
int cterminal_get_size(int fd, unsigned short *cols, unsigned short *rows);

#endif
