/*
 * slow-fsync: an LD_PRELOAD shim for the benchmark that makes the storage of a process behave
 * like a slow medium (an SD card) on a machine with a fast disk:
 * - every fsync and fdatasync takes CONVOY_FSYNC_DELAY_US microseconds longer (the medium's
 *   commit latency);
 * - with CONVOY_STORAGE_KB_PER_S set, an fsync also waits for the bytes written to that file
 *   since its last sync at that rate (the medium's write bandwidth): a checkpoint that copied
 *   megabytes into the database file then pays for them, as it would on a card.
 * Bytes are counted per file descriptor from write, pwrite and pwrite64.
 *
 * gcc -O2 -Wall -shared -fPIC -o slow-fsync.so slow-fsync.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 4096

static long delay_us = -1;
static long kb_per_s = 0;
static unsigned long long unsynced[MAX_FDS];

static void settings(void) {
  if (delay_us >= 0) return;
  const char *v = getenv("CONVOY_FSYNC_DELAY_US");
  const char *b = getenv("CONVOY_STORAGE_KB_PER_S");
  long d = v ? atol(v) : 0;
  kb_per_s = b ? atol(b) : 0;
  if (kb_per_s < 0) kb_per_s = 0;
  delay_us = d < 0 ? 0 : d;
}

static void count(int fd, ssize_t n) {
  if (n > 0 && fd >= 0 && fd < MAX_FDS) __atomic_fetch_add(&unsynced[fd], (unsigned long long)n, __ATOMIC_RELAXED);
}

static void slow_down(int fd) {
  settings();
  long long us = delay_us;
  if (kb_per_s > 0 && fd >= 0 && fd < MAX_FDS) {
    unsigned long long bytes = __atomic_exchange_n(&unsynced[fd], 0ULL, __ATOMIC_RELAXED);
    us += (long long)(bytes * 1000ULL / (unsigned long long)kb_per_s) / 1024;
  }
  if (us <= 0) return;
  struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
  while (nanosleep(&ts, &ts) != 0) {
  }
}

ssize_t write(int fd, const void *buf, size_t n) {
  static ssize_t (*real)(int, const void *, size_t);
  if (!real) real = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
  ssize_t r = real(fd, buf, n);
  count(fd, r);
  return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
  static ssize_t (*real)(int, const void *, size_t, off_t);
  if (!real) real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
  ssize_t r = real(fd, buf, n, off);
  count(fd, r);
  return r;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off) {
  static ssize_t (*real)(int, const void *, size_t, off64_t);
  if (!real) real = (ssize_t (*)(int, const void *, size_t, off64_t))dlsym(RTLD_NEXT, "pwrite64");
  ssize_t r = real(fd, buf, n, off);
  count(fd, r);
  return r;
}

int fsync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  slow_down(fd);
  return real(fd);
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  slow_down(fd);
  return real(fd);
}
