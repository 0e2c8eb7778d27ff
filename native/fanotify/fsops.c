/*
 * esgz-fsops: the filesystem calls layer unpacking needs and Node does not expose.
 *   esgz-fsops mknod PATH c|b|p MAJOR MINOR MODE(octal)
 *   esgz-fsops setxattr PATH NAME HEXVALUE      (lsetxattr: never follows a symlink at PATH)
 * The caller has already resolved PATH's parents inside the unpack root; the last component is
 * never followed. Exit 0 on success, 1 with "esgz-fsops: <op> PATH: <strerror>" on failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int main(int argc, char **argv) {
  if (argc == 7 && strcmp(argv[1], "mknod") == 0) {
    mode_t type = argv[3][0] == 'c' ? S_IFCHR : argv[3][0] == 'b' ? S_IFBLK : argv[3][0] == 'p' ? S_IFIFO : 0;
    if (!type || argv[3][1]) { fprintf(stderr, "esgz-fsops: mknod: bad type %s\n", argv[3]); return 2; }
    unsigned maj = strtoul(argv[4], NULL, 10), min = strtoul(argv[5], NULL, 10);
    mode_t perm = strtoul(argv[6], NULL, 8) & 07777;
    if (mknod(argv[2], type | perm, makedev(maj, min)) < 0) {
      fprintf(stderr, "esgz-fsops: mknod %s: %s\n", argv[2], strerror(errno));
      return 1;
    }
    return 0;
  }
  if (argc == 5 && strcmp(argv[1], "setxattr") == 0) {
    size_t hexlen = strlen(argv[4]);
    if (hexlen % 2) { fprintf(stderr, "esgz-fsops: setxattr: odd hex length\n"); return 2; }
    unsigned char *value = malloc(hexlen / 2 + 1);
    if (!value) return 2;
    for (size_t i = 0; i < hexlen / 2; i++) {
      int hi = hexval(argv[4][2 * i]), lo = hexval(argv[4][2 * i + 1]);
      if (hi < 0 || lo < 0) { fprintf(stderr, "esgz-fsops: setxattr: bad hex\n"); return 2; }
      value[i] = (unsigned char)(hi << 4 | lo);
    }
    if (lsetxattr(argv[2], argv[3], value, hexlen / 2, 0) < 0) {
      fprintf(stderr, "esgz-fsops: setxattr %s %s: %s\n", argv[2], argv[3], strerror(errno));
      return 1;
    }
    return 0;
  }
  fprintf(stderr, "usage: esgz-fsops mknod PATH c|b|p MAJOR MINOR MODE | setxattr PATH NAME HEXVALUE\n");
  return 2;
}
