#define _GNU_SOURCE
#include "cterminal.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

int cterminal_open_pty(char *name, size_t name_len, unsigned short cols, unsigned short rows) {
  int fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return -errno;
  if (grantpt(fd) != 0 || unlockpt(fd) != 0 || ptsname_r(fd, name, name_len) != 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  struct winsize ws = { .ws_row = rows, .ws_col = cols };
  if (ioctl(fd, TIOCSWINSZ, &ws) != 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

int cterminal_set_size(int fd, unsigned short cols, unsigned short rows) {
  struct winsize ws = { .ws_row = rows, .ws_col = cols };
  return ioctl(fd, TIOCSWINSZ, &ws) == 0 ? 0 : -errno;
}

int cterminal_get_size(int fd, unsigned short *cols, unsigned short *rows) {
  struct winsize ws;
  if (ioctl(fd, TIOCGWINSZ, &ws) != 0) return -errno;
  *cols = ws.ws_col;
  *rows = ws.ws_row;
  return 0;
}
