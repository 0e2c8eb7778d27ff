/*
 * esgz-fsops: the filesystem calls layer unpacking needs and Node does not expose.
 *   esgz-fsops mknod PATH c|b|p MAJOR MINOR MODE(octal)
 *   esgz-fsops setxattr PATH NAME HEXVALUE      (lsetxattr: never follows a symlink at PATH)
 *   esgz-fsops serve                            (the same operations, many per process)
 * The caller has already resolved PATH's parents inside the unpack root; the last component is
 * never followed. Exit 0 on success, 1 with "esgz-fsops: <op> PATH: <strerror>" on failure.
 *
 * serve reads one request per line on stdin and answers each, in order, with one line on stdout
 * ("ok" or "err <strerror>"), so an unpack of 100k whiteouts costs 100k syscalls, not 100k
 * processes. Paths, names and values are hex so any bytes pass through a line:
 *   mknod HEXPATH c|b|p MAJOR MINOR MODE(octal)      (umask 0: MODE is the node's mode)
 *   setxattr HEXPATH HEXNAME HEXVALUE
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decodes hex into a new NUL-terminated buffer; NULL (errno EINVAL) on bad input. */
static unsigned char *unhex(const char *hex, size_t *len) {
  size_t hexlen = strlen(hex);
  if (hexlen % 2) { errno = EINVAL; return NULL; }
  unsigned char *out = malloc(hexlen / 2 + 1);
  if (!out) return NULL;
  for (size_t i = 0; i < hexlen / 2; i++) {
    int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) { free(out); errno = EINVAL; return NULL; }
    out[i] = (unsigned char)(hi << 4 | lo);
  }
  out[hexlen / 2] = 0;
  if (len) *len = hexlen / 2;
  return out;
}

/* 0 on success, -1 with errno set. */
static int do_mknod(const char *path, const char *type_arg, const char *maj_arg, const char *min_arg, const char *mode_arg) {
  mode_t type = type_arg[0] == 'c' ? S_IFCHR : type_arg[0] == 'b' ? S_IFBLK : type_arg[0] == 'p' ? S_IFIFO : 0;
  if (!type || type_arg[1]) { errno = EINVAL; return -1; }
  unsigned maj = strtoul(maj_arg, NULL, 10), min = strtoul(min_arg, NULL, 10);
  mode_t perm = strtoul(mode_arg, NULL, 8) & 07777;
  return mknod(path, type | perm, makedev(maj, min));
}

/* Answers one request line (NUL-terminated, no newline) into `out`. */
static void answer(char *line, FILE *out) {
  char *argv[7];
  int argc = 0;
  char *save = NULL;
  for (char *tok = strtok_r(line, " ", &save); tok && argc < 7; tok = strtok_r(NULL, " ", &save)) argv[argc++] = tok;
  int rc = -1;
  errno = EINVAL;
  if (argc == 6 && strcmp(argv[0], "mknod") == 0) {
    unsigned char *path = unhex(argv[1], NULL);
    if (path) {
      rc = do_mknod((char *)path, argv[2], argv[3], argv[4], argv[5]);
      free(path);
    }
  } else if (argc == 4 && strcmp(argv[0], "setxattr") == 0) {
    size_t vlen = 0;
    unsigned char *path = unhex(argv[1], NULL), *name = unhex(argv[2], NULL), *value = unhex(argv[3], &vlen);
    if (path && name && value) rc = lsetxattr((char *)path, (char *)name, value, vlen, 0);
    int saved = errno;
    free(path);
    free(name);
    free(value);
    errno = saved;
  }
  if (rc == 0) fputs("ok\n", out);
  else fprintf(out, "err %s\n", strerror(errno));
}

/*
 * Reads whatever requests have arrived, answers them all, and writes the answers at once: the
 * caller sends many requests before waiting, so a batch costs one read and one write.
 */
static int serve(void) {
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  char *answers = NULL;
  size_t answers_len = 0;
  if (!buf) return 2;
  for (;;) {
    if (len == cap) {
      char *bigger = realloc(buf, cap *= 2);
      if (!bigger) return 2;
      buf = bigger;
    }
    ssize_t n = read(0, buf + len, cap - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += n;
    FILE *out = open_memstream(&answers, &answers_len);
    if (!out) return 2;
    char *start = buf, *nl;
    while ((nl = memchr(start, '\n', buf + len - start))) {
      *nl = 0;
      answer(start, out);
      start = nl + 1;
    }
    fclose(out);
    len -= start - buf;
    memmove(buf, start, len);
    for (size_t done = 0; done < answers_len;) {
      ssize_t w = write(1, answers + done, answers_len - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return 1;
      done += w;
    }
    free(answers);
    answers = NULL;
  }
  free(buf);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "serve") == 0) {
    /* Modes are the layer's, exactly: the caller never chmods a node it did not open itself. */
    umask(0);
    return serve();
  }
  if (argc == 7 && strcmp(argv[1], "mknod") == 0) {
    if (do_mknod(argv[2], argv[3], argv[4], argv[5], argv[6]) < 0) {
      fprintf(stderr, "esgz-fsops: mknod %s: %s\n", argv[2], strerror(errno));
      return 1;
    }
    return 0;
  }
  if (argc == 5 && strcmp(argv[1], "setxattr") == 0) {
    size_t len = 0;
    unsigned char *value = unhex(argv[4], &len);
    if (!value) { fprintf(stderr, "esgz-fsops: setxattr: bad hex value\n"); return 2; }
    if (lsetxattr(argv[2], argv[3], value, len, 0) < 0) {
      fprintf(stderr, "esgz-fsops: setxattr %s %s: %s\n", argv[2], argv[3], strerror(errno));
      return 1;
    }
    return 0;
  }
  fprintf(stderr, "usage: esgz-fsops mknod PATH c|b|p MAJOR MINOR MODE | setxattr PATH NAME HEXVALUE | serve\n");
  return 2;
}
