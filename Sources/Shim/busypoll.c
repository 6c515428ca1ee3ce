// Busy polling before the program's thread sleeps for lvlipd (docs/shim.md, "Busy polling").
//
// Every exchange through lvlip crosses three processes: the program, lvlipd and the peer.
// When they run on different CPUs, each wake-up of a sleeping thread costs an
// inter-processor interrupt and, in a virtual machine, an exit to the hypervisor (a pipe
// round trip between two processes: 11-13 µs across the 2-vCPU benchmark machine's CPUs,
// 3.5 µs on one). lvlipd polls its own
// epoll set before it sleeps (--busy-poll); this is the program's side of it: before a
// blocking wait for lvlipd's reply or for a stream's data, the thread polls the one
// descriptor without a timeout (and yields the CPU between polls, so that a thread waiting
// for it runs) for up to LVLIP_BUSY_POLL microseconds. Only where the process may run on
// more than one CPU: on one, the thread it would wait for needs this very CPU.
#include "shim.h"

#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

#define DEFAULT_MICROSECONDS 50
#define MOST_MICROSECONDS 100000

// -1 until first asked; then the window in nanoseconds (0: off). Read once per process:
// the affinity and the environment at the first blocking wait.
static long window_ns = -1;

static long read_window(void) {
    long us = DEFAULT_MICROSECONDS;
    const char *text = getenv("LVLIP_BUSY_POLL");
    if (text && *text) {
        char *end;
        long v = strtol(text, &end, 10);
        if (*end || v < 0 || v > MOST_MICROSECONDS) {
            say("lvlip: LVLIP_BUSY_POLL=%.40s is not 0 to %d microseconds; using %d\n", text, MOST_MICROSECONDS,
                DEFAULT_MICROSECONDS);
        } else {
            us = v;
        }
    }
    cpu_set_t cpus;
    if (us > 0 && (sched_getaffinity(0, sizeof cpus, &cpus) < 0 || CPU_COUNT(&cpus) < 2)) us = 0;
    return us * 1000;
}

long busy_poll_window(void) {
    long w = __atomic_load_n(&window_ns, __ATOMIC_RELAXED);
    if (__builtin_expect(w < 0, 0)) {
        int saved = errno;
        w = read_window();
        errno = saved;
        __atomic_store_n(&window_ns, w, __ATOMIC_RELAXED);
    }
    return w;
}

static long monotonic_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

int busy_poll(struct pollfd *p, const sigset_t *mask) {
    long window = busy_poll_window();
    if (window <= 0) return 0;
    static const struct timespec now = {0, 0};
    long start = monotonic_ns();
    for (;;) {
        int r = ppoll(p, 1, &now, mask);
        if (r != 0) return r;
        if (monotonic_ns() - start >= window) return 0;
        sched_yield();
    }
}
