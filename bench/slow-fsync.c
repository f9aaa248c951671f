/*
 * slow-fsync: an LD_PRELOAD shim for the benchmark that makes every fsync and fdatasync of the
 * process take CONVOY_FSYNC_DELAY_US microseconds longer, to see how a broker behaves on slow
 * storage (an SD card commits in milliseconds) on a machine with a fast disk.
 *
 * gcc -O2 -Wall -shared -fPIC -o slow-fsync.so slow-fsync.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long delay_us = -1;

static void slow_down(void) {
  if (delay_us < 0) {
    const char *v = getenv("CONVOY_FSYNC_DELAY_US");
    delay_us = v ? atol(v) : 0;
    if (delay_us < 0) delay_us = 0;
  }
  if (delay_us == 0) return;
  struct timespec ts = { delay_us / 1000000, (delay_us % 1000000) * 1000 };
  while (nanosleep(&ts, &ts) != 0) {
  }
}

int fsync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  slow_down();
  return real(fd);
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  slow_down();
  return real(fd);
}
