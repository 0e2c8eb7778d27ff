/*
 * esgz-fanotify [-n] ROOT
 *
 * Reports the files processes open, execute and read on the filesystem that holds ROOT (the
 * container's overlayfs mount). FAN_MARK_FILESYSTEM is used because runc bind-mounts the rootfs
 * into the container's own mount namespace: a FAN_MARK_MOUNT on our mount would see nothing.
 *
 * Output on stdout, line-buffered:
 *   "READY"                      once the mark is in place (the caller starts the workload after it)
 *   "<X|O|A> <pid> <path>"       X exec, O open, A access; from the first exec on, only the
 *                                first event for each distinct path
 * The path is whatever the kernel resolves for the opened file, seen from this process: paths
 * opened after the container's pivot_root come back container-absolute. Backslash and newline in
 * paths are escaped as "\\" and "\n" so every record is one line.
 * On SIGTERM or SIGINT the queue is drained and the program exits 0.
 *
 * -n skips events from live processes in this program's own pid namespace. It is for a rootfs
 * that is a plain directory on the host's filesystem (no overlay): the mark then covers the whole
 * host filesystem, and the container's processes are the ones in another pid namespace.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

/* Open-addressing set of seen paths (FNV-1a); a workload touches thousands of files, not millions. */
static char **seen;
static size_t seen_cap = 1 << 14, seen_len;

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

static int seen_add(const char *path) { /* 1 if newly added */
  if ((seen_len + 1) * 2 > seen_cap) {
    size_t old_cap = seen_cap;
    char **old = seen;
    seen_cap *= 2;
    seen = calloc(seen_cap, sizeof(char *));
    if (!seen) { perror("esgz-fanotify: calloc"); exit(2); }
    for (size_t i = 0; i < old_cap; i++) {
      if (!old[i]) continue;
      size_t j = hash_str(old[i]) & (seen_cap - 1);
      while (seen[j]) j = (j + 1) & (seen_cap - 1);
      seen[j] = old[i];
    }
    free(old);
  }
  size_t j = hash_str(path) & (seen_cap - 1);
  while (seen[j]) {
    if (strcmp(seen[j], path) == 0) return 0;
    j = (j + 1) & (seen_cap - 1);
  }
  seen[j] = strdup(path);
  if (!seen[j]) { perror("esgz-fanotify: strdup"); exit(2); }
  seen_len++;
  return 1;
}

static void print_escaped(const char *s) {
  for (; *s; s++) {
    if (*s == '\\') fputs("\\\\", stdout);
    else if (*s == '\n') fputs("\\n", stdout);
    else putchar(*s);
  }
}

static int only_foreign_pidns;
static int exec_seen;
static ino_t own_pidns;

static ino_t pidns_of(const char *proc_pid_dir) {
  char p[64];
  struct stat st;
  snprintf(p, sizeof p, "%s/ns/pid", proc_pid_dir);
  return stat(p, &st) == 0 ? st.st_ino : 0;
}

static int from_own_pidns(int pid) {
  char dir[32];
  snprintf(dir, sizeof dir, "/proc/%d", pid);
  ino_t ns = pidns_of(dir);
  return ns != 0 && ns == own_pidns;
}

static void handle_events(int fan_fd, int *failed) {
  char buf[64 * 1024] __attribute__((aligned(__alignof__(struct fanotify_event_metadata))));
  for (;;) {
    ssize_t len = read(fan_fd, buf, sizeof buf);
    if (len < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      perror("esgz-fanotify: read");
      *failed = 1;
      return;
    }
    if (len == 0) return;
    struct fanotify_event_metadata *md = (struct fanotify_event_metadata *)buf;
    for (; FAN_EVENT_OK(md, len); md = FAN_EVENT_NEXT(md, len)) {
      if (md->vers != FANOTIFY_METADATA_VERSION) {
        fprintf(stderr, "esgz-fanotify: kernel fanotify metadata version %d is not supported\n", md->vers);
        exit(2);
      }
      if (md->mask & FAN_Q_OVERFLOW) {
        fprintf(stderr, "esgz-fanotify: event queue overflowed; some accesses were not recorded\n");
        continue;
      }
      if (md->fd < 0) continue;
      if (only_foreign_pidns && from_own_pidns(md->pid)) { close(md->fd); continue; }
      char link[64], path[PATH_MAX + 1];
      snprintf(link, sizeof link, "/proc/self/fd/%d", md->fd);
      ssize_t n = readlink(link, path, PATH_MAX);
      close(md->fd);
      if (n <= 0) continue;
      path[n] = '\0';
      char kind = (md->mask & FAN_OPEN_EXEC) ? 'X' : (md->mask & FAN_OPEN) ? 'O' : 'A';
      /* Until the first exec the events are the runtime's own setup (runc reads /etc/passwd and
       * /etc/group); they are all printed so the caller can drop them without losing the
       * workload's own first access to the same files. */
      if (kind == 'X') exec_seen = 1;
      if (exec_seen && !seen_add(path)) continue;
      printf("%c %d ", kind, (int)md->pid);
      print_escaped(path);
      putchar('\n');
    }
    fflush(stdout);
  }
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "-n") == 0) {
    only_foreign_pidns = 1;
    own_pidns = pidns_of("/proc/self");
    argv++;
    argc--;
  }
  if (argc != 2) {
    fprintf(stderr, "usage: esgz-fanotify [-n] ROOT\n");
    return 2;
  }
  seen = calloc(seen_cap, sizeof(char *));
  if (!seen) { perror("esgz-fanotify: calloc"); return 2; }

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) { perror("esgz-fanotify: sigprocmask"); return 2; }
  int sig_fd = signalfd(-1, &mask, SFD_CLOEXEC);
  if (sig_fd < 0) { perror("esgz-fanotify: signalfd"); return 2; }

  /* An unlimited queue (root only): a workload reading fast must not make us lose events. */
  int fan_fd = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE, O_RDONLY | O_LARGEFILE | O_CLOEXEC);
  if (fan_fd < 0 && errno == EPERM)
    fan_fd = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE | O_CLOEXEC);
  if (fan_fd < 0) {
    fprintf(stderr, "esgz-fanotify: fanotify_init: %s%s\n", strerror(errno),
            errno == EPERM ? " (needs root / CAP_SYS_ADMIN)" : "");
    return 3;
  }
  uint64_t events = FAN_OPEN | FAN_OPEN_EXEC | FAN_ACCESS;
  if (fanotify_mark(fan_fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, events, AT_FDCWD, argv[1]) < 0) {
    fprintf(stderr, "esgz-fanotify: fanotify_mark %s: %s\n", argv[1], strerror(errno));
    return 3;
  }
  setvbuf(stdout, NULL, _IOFBF, 1 << 16);
  puts("READY");
  fflush(stdout);

  int failed = 0;
  struct pollfd fds[2] = {{.fd = fan_fd, .events = POLLIN}, {.fd = sig_fd, .events = POLLIN}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      perror("esgz-fanotify: poll");
      return 2;
    }
    if (fds[0].revents & POLLIN) handle_events(fan_fd, &failed);
    if (failed) return 2;
    if (fds[1].revents & POLLIN) {
      /* Events already queued belong to the workload that just stopped: record them too. */
      handle_events(fan_fd, &failed);
      fflush(stdout);
      return failed ? 2 : 0;
    }
  }
}
