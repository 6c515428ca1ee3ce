/* loadgen: the TCP load generator of scripts/bench/throughput.
 *
 * One program for both sides, run once on the kernel's sockets and once under lvlip (the
 * LD_PRELOAD shim), so the two stacks see the same client. Results are one JSON object on
 * stdout; errors are one line on stderr and a non-zero exit.
 *
 *   loadgen server ADDR PORT NPORTS       epoll echo server on ADDR:PORT..PORT+NPORTS-1
 *   loadgen source ADDR PORT BYTES        sends BYTES to every connection, then closes it
 *   loadgen pingpong HOST PORT SECONDS    64-byte request/response on one connection
 *   loadgen connrate HOST PORT SECONDS [NPORTS]
 *                                         connect, 64-byte request, 64-byte reply, close, in
 *                                         a loop (over NPORTS server ports, so that TIME-WAIT
 *                                         names do not run out of ephemeral ports)
 *   loadgen concurrent HOST PORT COUNT [NPORTS]
 *                                         COUNT non-blocking connects at once, held idle until
 *                                         a line on stdin, then one 64-byte echo on each, then
 *                                         (after another line on stdin) all closed
 *   loadgen download HOST PORT BYTES SECONDS
 *                                         reads until end of stream from a `source` server
 *   loadgen sink ADDR PORT                reads every connection to its end, then answers
 *                                         with the byte count (one decimal line) and closes
 *   loadgen upload HOST PORT BYTES SECONDS
 *                                         sends BYTES to a `sink` server, shuts its side
 *                                         down and waits for the count: timed to delivery
 *
 * Every mode is bounded in time: the clients by their arguments and internal deadlines, the
 * servers by alarm(LOADGEN_MAX_SECONDS) (default 900) besides the harness's SIGTERM.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 64

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct sockaddr_in address(const char *host, int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "loadgen: bad IPv4 address %s\n", host);
        exit(2);
    }
    return a;
}

static void raise_nofile(rlim_t want) {
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) != 0) return;
    if (r.rlim_cur >= want) return;
    r.rlim_cur = want;
    if (r.rlim_max < want) r.rlim_max = want;
    if (setrlimit(RLIMIT_NOFILE, &r) != 0) {
        getrlimit(RLIMIT_NOFILE, &r);
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int write_all(int fd, const char *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, buf + done, n - done);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct pollfd p = {fd, POLLOUT, 0};
                if (poll(&p, 1, 5000) <= 0) return -1;
                continue;
            }
            return -1;
        }
        done += (size_t)w;
    }
    return 0;
}

static int read_all(int fd, char *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = read(fd, buf + done, n - done);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) {
            errno = ECONNRESET;
            return -1;
        }
        done += (size_t)r;
    }
    return 0;
}

static int connect_blocking(const char *host, int port) {
    struct sockaddr_in a = address(host, port);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int listen_on(const char *addr, int port) {
    struct sockaddr_in a = address(addr, port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) die("bind");
    if (listen(fd, 65535) != 0) die("listen");
    return fd;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted values, in microseconds. */
static double pct_us(const uint64_t *v, size_t n, double p) {
    if (n == 0) return 0;
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return (double)v[rank - 1] / 1000.0;
}

static void print_latencies(const char *name, uint64_t *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (double)v[i];
    printf("\"%s\": {\"count\": %zu, \"min_us\": %.3f, \"p50_us\": %.3f, \"p90_us\": %.3f, "
           "\"p99_us\": %.3f, \"p999_us\": %.3f, \"max_us\": %.3f, \"mean_us\": %.3f, \"cdf\": [",
           name, n, n ? v[0] / 1000.0 : 0, pct_us(v, n, 50), pct_us(v, n, 90), pct_us(v, n, 99),
           pct_us(v, n, 99.9), n ? v[n - 1] / 1000.0 : 0, n ? sum / (double)n / 1000.0 : 0);
    /* 0.5% steps, then the tail in finer steps: enough for a distribution plot. */
    int first = 1;
    for (double p = 0.5; p <= 99.0001; p += 0.5) {
        printf("%s[%.2f, %.3f]", first ? "" : ", ", p, pct_us(v, n, p));
        first = 0;
    }
    for (double p = 99.1; p <= 99.9001; p += 0.1) printf(", [%.2f, %.3f]", p, pct_us(v, n, p));
    printf(", [99.99, %.3f], [100.00, %.3f]]}", pct_us(v, n, 99.99), pct_us(v, n, 100));
}

/* MARK: - Servers */

_Noreturn static void serve_echo(const char *addr, int port, int nports) {
    raise_nofile(1 << 17);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    for (int i = 0; i < nports; i++) {
        int l = listen_on(addr, port + i);
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ((uint64_t)1 << 32) | (uint32_t)l};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) != 0) die("epoll_ctl");
    }
    printf("ready\n");
    fflush(stdout);
    static char buf[65536];
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = (int)(uint32_t)events[i].data.u64;
            if (events[i].data.u64 >> 32) {
                for (;;) {
                    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    nodelay(c);
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint32_t)c};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) != 0) close(c);
                }
                continue;
            }
            for (;;) {
                ssize_t r = read(fd, buf, sizeof buf);
                if (r > 0) {
                    if (write_all(fd, buf, (size_t)r) != 0) {
                        close(fd);
                        break;
                    }
                    if ((size_t)r < sizeof buf) break;
                    continue;
                }
                if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
                close(fd); /* end of stream or error; close also removes it from epoll */
                break;
            }
        }
    }
}

/* A blocking listener for servers that take one connection at a time; says "ready". */
static int listen_blocking(const char *addr, int port) {
    int l = listen_on(addr, port);
    int flags = fcntl(l, F_GETFL);
    fcntl(l, F_SETFL, flags & ~O_NONBLOCK);
    printf("ready\n");
    fflush(stdout);
    return l;
}

static int accept_one(int l) {
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c >= 0) return c;
        if (errno != EINTR) die("accept");
    }
}

_Noreturn static void serve_source(const char *addr, int port, long long bytes) {
    int l = listen_blocking(addr, port);
    static char buf[1 << 16];
    memset(buf, 'x', sizeof buf);
    for (;;) {
        int c = accept_one(l);
        long long left = bytes;
        while (left > 0) {
            size_t chunk = left < (long long)sizeof buf ? (size_t)left : sizeof buf;
            ssize_t w = write(c, buf, chunk);
            if (w < 0) {
                if (errno == EINTR) continue;
                break;
            }
            left -= w;
        }
        close(c);
    }
}

/* Serves one connection at a time: the uploads are sequential, and the count it answers
 * after the end of stream is what `upload` checks its delivery against. */
_Noreturn static void serve_sink(const char *addr, int port) {
    int l = listen_blocking(addr, port);
    static char buf[1 << 16];
    for (;;) {
        int c = accept_one(l);
        /* A stalled sender must not hold the sink forever. */
        struct timeval tv = {60, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        long long got = 0;
        ssize_t r;
        while ((r = read(c, buf, sizeof buf)) != 0) {
            if (r > 0) got += r;
            else if (errno != EINTR) break;
        }
        if (r == 0) {
            char line[32];
            int n = snprintf(line, sizeof line, "%lld\n", got);
            write_all(c, line, (size_t)n);
        }
        close(c);
    }
}

/* MARK: - Clients */

/* Appends one latency sample, growing the array as needed. */
static void record(uint64_t **lat, size_t *n, size_t *cap, uint64_t ns) {
    if (*n == *cap) {
        *cap *= 2;
        *lat = realloc(*lat, *cap * sizeof **lat);
        if (!*lat) die("realloc");
    }
    (*lat)[(*n)++] = ns;
}

static int pingpong(const char *host, int port, double seconds) {
    int fd = connect_blocking(host, port);
    if (fd < 0) die("connect");
    nodelay(fd);
    char out[MSG], in[MSG];
    memset(out, 'p', sizeof out);
    size_t cap = 1 << 20, n = 0;
    uint64_t *lat = malloc(cap * sizeof *lat);
    if (!lat) die("malloc");
    /* A short warm-up (not counted): caches, ARP, the daemon's first allocations. */
    double warm = now_s() + (seconds > 2 ? 0.5 : 0.1);
    while (now_s() < warm) {
        if (write_all(fd, out, MSG) || read_all(fd, in, MSG)) die("warm-up echo");
    }
    double start = now_s(), deadline = start + seconds;
    uint64_t limit = 50000000; /* a bound on the loop besides the time */
    while (n < limit) {
        uint64_t t0 = now_ns();
        if (write_all(fd, out, MSG) || read_all(fd, in, MSG)) die("echo");
        record(&lat, &n, &cap, now_ns() - t0);
        if ((n & 63) == 0 && now_s() >= deadline) break;
    }
    double elapsed = now_s() - start;
    close(fd);
    printf("{\"mode\": \"pingpong\", \"seconds\": %.3f, \"round_trips\": %zu, \"rate\": %.1f, ",
           elapsed, n, (double)n / elapsed);
    print_latencies("latency", lat, n);
    printf("}\n");
    return 0;
}

static int connrate(const char *host, int port, double seconds, int nports) {
    char out[MSG], in[MSG];
    memset(out, 'c', sizeof out);
    size_t cap = 1 << 18, n = 0;
    uint64_t *lat = malloc(cap * sizeof *lat);
    if (!lat) die("malloc");
    long errors = 0, consecutive = 0;
    int first_errno = 0;
    const char *first_step = "";
    double start = now_s(), deadline = start + seconds;
    uint64_t i = 0;
    while (now_s() < deadline && i < 20000000) {
        int p = port + (int)(i++ % (uint64_t)nports);
        uint64_t t0 = now_ns();
        const char *step = "connect";
        int fd = connect_blocking(host, p);
        if (fd >= 0) {
            nodelay(fd);
            step = "echo";
            if (write_all(fd, out, MSG) == 0 && read_all(fd, in, MSG) == 0) step = NULL;
            int e = errno;
            close(fd);
            errno = e;
        }
        if (step) {
            if (!first_errno) {
                first_errno = errno;
                first_step = step;
            }
            errors++;
            if (++consecutive >= 1000) break; /* something is broken: stop rather than spin */
            continue;
        }
        consecutive = 0;
        record(&lat, &n, &cap, now_ns() - t0);
    }
    double elapsed = now_s() - start;
    printf("{\"mode\": \"connrate\", \"seconds\": %.3f, \"connections\": %zu, \"errors\": %ld, "
           "\"first_error\": \"%s%s%s\", \"rate\": %.1f, ",
           elapsed, n, errors, first_step, first_errno ? ": " : "", first_errno ? strerror(first_errno) : "",
           (double)n / elapsed);
    print_latencies("latency", lat, n);
    printf("}\n");
    return 0;
}

/* Waits for one line on stdin (the harness measuring memory), at most `seconds`. */
static void wait_for_go(double seconds) {
    struct pollfd p = {0, POLLIN, 0};
    if (poll(&p, 1, (int)(seconds * 1000)) > 0) {
        char line[64];
        if (read(0, line, sizeof line) < 0) return;
    }
}

static int concurrent(const char *host, int port, int count, int nports) {
    raise_nofile((rlim_t)count + 1024);
    int *fds = calloc((size_t)count, sizeof *fds);
    char *state = calloc((size_t)count, 1); /* 0 connecting, 1 connected, 2 failed, 3 echoed */
    if (!fds || !state) die("calloc");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    int errs[256] = {0};
    long connected = 0, failed = 0, pending = 0;
    double t0 = now_s();
    for (int i = 0; i < count; i++) {
        struct sockaddr_in a = address(host, port + i % nports);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        fds[i] = fd;
        if (fd < 0) {
            errs[errno & 255]++;
            state[i] = 2;
            failed++;
            continue;
        }
        int r = connect(fd, (struct sockaddr *)&a, sizeof a);
        if (r != 0 && errno != EINPROGRESS) {
            errs[errno & 255]++;
            state[i] = 2;
            failed++;
            continue;
        }
        struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl");
        pending++;
    }
    double issued = now_s() - t0;
    struct epoll_event events[1024];
    double deadline = now_s() + 60;
    while (pending > 0 && now_s() < deadline) {
        int n = epoll_wait(ep, events, 1024, 1000);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int k = 0; k < n; k++) {
            int i = (int)events[k].data.u32;
            if (state[i] != 0) continue;
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
            epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
            pending--;
            if (err) {
                errs[err & 255]++;
                state[i] = 2;
                failed++;
            } else {
                nodelay(fds[i]);
                state[i] = 1;
                connected++;
            }
        }
    }
    double connect_seconds = now_s() - t0;
    fprintf(stderr, "loadgen: connected %ld of %d (%ld failed, %ld still pending) in %.2f s\n",
            connected, count, failed, pending, connect_seconds);
    printf("{\"mode\": \"concurrent\", \"requested\": %d, \"connected\": %ld, \"connect_failed\": %ld, "
           "\"connect_pending\": %ld, \"issue_seconds\": %.3f, \"connect_seconds\": %.3f, ",
           count, connected, failed, pending, issued, connect_seconds);
    printf("\"connect_errors\": {");
    int first = 1;
    for (int e = 0; e < 256; e++)
        if (errs[e]) {
            printf("%s\"%s\": %d", first ? "" : ", ", strerror(e), errs[e]);
            first = 0;
        }
    printf("}, ");
    fflush(stdout);
    printf("\"idle_ready\": true, ");
    fflush(stdout);
    fprintf(stderr, "loadgen: idle\n");
    wait_for_go(300);

    /* One echo on every connection: all requests first, then collect the replies. */
    char out[MSG], in[MSG];
    memset(out, 'e', sizeof out);
    memset(errs, 0, sizeof errs);
    long echoed = 0, echo_failed = 0, waiting = 0;
    double e0 = now_s();
    for (int i = 0; i < count; i++) {
        if (state[i] != 1) continue;
        if (write_all(fds[i], out, MSG) != 0) {
            errs[errno & 255]++;
            state[i] = 2;
            echo_failed++;
            continue;
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) != 0) die("epoll_ctl");
        waiting++;
    }
    int *got = calloc((size_t)count, sizeof *got);
    if (!got) die("calloc");
    deadline = now_s() + 60;
    while (waiting > 0 && now_s() < deadline) {
        int n = epoll_wait(ep, events, 1024, 1000);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int k = 0; k < n; k++) {
            int i = (int)events[k].data.u32;
            if (state[i] != 1) continue;
            ssize_t r = read(fds[i], in, MSG - (size_t)got[i]);
            if (r < 0 && errno == EAGAIN) continue;
            if (r <= 0) {
                errs[(r == 0 ? ECONNRESET : errno) & 255]++;
                state[i] = 2;
                echo_failed++;
                waiting--;
                epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
                continue;
            }
            got[i] += (int)r;
            if (got[i] >= MSG) {
                state[i] = 3;
                echoed++;
                waiting--;
                epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
            }
        }
    }
    double echo_seconds = now_s() - e0;
    fprintf(stderr, "loadgen: echoed %ld (%ld failed, %ld still waiting) in %.2f s\n", echoed, echo_failed,
            waiting, echo_seconds);
    printf("\"echoed\": %ld, \"echo_failed\": %ld, \"echo_pending\": %ld, \"echo_seconds\": %.3f, "
           "\"echo_errors\": {",
           echoed, echo_failed, waiting, echo_seconds);
    first = 1;
    for (int e = 0; e < 256; e++)
        if (errs[e]) {
            printf("%s\"%s\": %d", first ? "" : ", ", strerror(e), errs[e]);
            first = 0;
        }
    printf("}}\n");
    fflush(stdout);
    fprintf(stderr, "loadgen: echoed\n");
    wait_for_go(300);
    for (int i = 0; i < count; i++)
        if (fds[i] >= 0) close(fds[i]);
    return 0;
}

static int download(const char *host, int port, long long bytes, double seconds) {
    double t0 = now_s(), deadline = t0 + seconds;
    int fd = connect_blocking(host, port);
    if (fd < 0) die("connect");
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    static char buf[1 << 16];
    long long got = 0;
    int error = 0;
    while (now_s() < deadline) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r > 0) {
            got += r;
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (r < 0) error = errno;
        break;
    }
    double elapsed = now_s() - t0;
    close(fd);
    printf("{\"mode\": \"download\", \"bytes\": %lld, \"expected\": %lld, \"complete\": %s, \"seconds\": %.3f, "
           "\"mbit_per_s\": %.1f, \"error\": \"%s\"}\n",
           got, bytes, got == bytes ? "true" : "false", elapsed, (double)got * 8 / elapsed / 1e6,
           error ? strerror(error) : (got == bytes ? "" : "timed out or short"));
    return got == bytes ? 0 : 3;
}

/* The time from connect to the sink's count, which it sends only after reading the end of
 * stream: the upload's goodput as delivered, not as buffered in the sender. */
static int upload(const char *host, int port, long long bytes, double seconds) {
    double t0 = now_s(), deadline = t0 + seconds;
    int fd = connect_blocking(host, port);
    if (fd < 0) die("connect");
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    static char buf[1 << 16];
    memset(buf, 'u', sizeof buf);
    long long sent = 0, delivered = -1;
    int error = 0;
    while (sent < bytes && now_s() < deadline) {
        size_t chunk = bytes - sent < (long long)sizeof buf ? (size_t)(bytes - sent) : sizeof buf;
        ssize_t w = write(fd, buf, chunk);
        if (w > 0) sent += w;
        else if (w < 0 && errno != EAGAIN && errno != EINTR) {
            error = errno;
            break;
        }
    }
    char answer[32];
    size_t have = 0;
    if (sent == bytes && shutdown(fd, SHUT_WR) == 0) {
        while (now_s() < deadline && have < sizeof answer - 1) {
            ssize_t r = read(fd, answer + have, sizeof answer - 1 - have);
            if (r > 0) {
                have += (size_t)r;
                continue;
            }
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r < 0) error = errno;
            break;
        }
        answer[have] = 0;
        if (have > 0 && answer[have - 1] == '\n') delivered = atoll(answer);
    }
    double elapsed = now_s() - t0;
    close(fd);
    int complete = delivered == bytes;
    printf("{\"mode\": \"upload\", \"bytes\": %lld, \"expected\": %lld, \"complete\": %s, \"seconds\": %.3f, "
           "\"mbit_per_s\": %.1f, \"error\": \"%s\"}\n",
           delivered < 0 ? sent : delivered, bytes, complete ? "true" : "false", elapsed,
           (double)(complete ? bytes : 0) * 8 / elapsed / 1e6,
           error ? strerror(error) : (complete ? "" : "timed out, or the sink's count differs"));
    return complete ? 0 : 3;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen server ADDR PORT NPORTS | source ADDR PORT BYTES |\n"
            "       pingpong HOST PORT SECONDS | connrate HOST PORT SECONDS [NPORTS] |\n"
            "       concurrent HOST PORT COUNT [NPORTS] | download HOST PORT BYTES SECONDS |\n"
            "       sink ADDR PORT | upload HOST PORT BYTES SECONDS\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 4 || (argc < 5 && strcmp(argv[1], "sink"))) usage();
    signal(SIGPIPE, SIG_IGN);
    const char *mode = argv[1], *host = argv[2];
    int port = atoi(argv[3]);
    if (port <= 0 || port > 65535) usage();
    const char *bound = getenv("LOADGEN_MAX_SECONDS");
    alarm(bound ? (unsigned)atoi(bound) : 900); /* no mode outlives this, whatever happens */
    if (!strcmp(mode, "server")) serve_echo(host, port, atoi(argv[4]));
    if (!strcmp(mode, "source")) serve_source(host, port, atoll(argv[4]));
    if (!strcmp(mode, "sink")) serve_sink(host, port);
    if (!strcmp(mode, "pingpong")) return pingpong(host, port, atof(argv[4]));
    if (!strcmp(mode, "connrate")) return connrate(host, port, atof(argv[4]), argc > 5 ? atoi(argv[5]) : 1);
    if (!strcmp(mode, "concurrent")) {
        int count = atoi(argv[4]);
        if (count < 1 || count > (1 << 20)) usage();
        return concurrent(host, port, count, argc > 5 ? atoi(argv[5]) : 1);
    }
    if (!strcmp(mode, "download")) {
        if (argc < 6) usage();
        return download(host, port, atoll(argv[4]), atof(argv[5]));
    }
    if (!strcmp(mode, "upload")) {
        if (argc < 6) usage();
        return upload(host, port, atoll(argv[4]), atof(argv[5]));
    }
    usage();
    return 2;
}
