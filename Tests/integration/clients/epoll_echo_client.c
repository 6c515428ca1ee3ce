// epoll_echo_client: holds COUNT TCP connections on one epoll set against an echo server.
//
//   epoll_echo_client IP PORT COUNT edge|level TIMEOUT_SECONDS
//
// Every connection is started with a non-blocking connect; EPOLLOUT tells it completed and
// getsockopt(SO_ERROR) whether it succeeded. Each connection then sends its own payload (2 to
// 6 KB, content derived from the connection's number) and reads the echo back, checking every
// byte. "edge" registers each socket once with EPOLLET and drains reads and writes to EAGAIN;
// "level" is level-triggered and drops EPOLLOUT once everything is sent.
//
// Prints "OK COUNT connected=N bytes=B" and exits 0 when every connection got its payload
// back intact; otherwise prints "FAIL ..." with the first errors on stderr and exits 1.
// Used by Tests/integration/test_compat_robustness.py, run with and without lvlip.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum phase { CONNECTING, STREAMING, DONE, FAILED };

struct conn {
    int fd;
    int index;
    enum phase phase;
    size_t size;
    size_t sent;
    size_t received;
    uint32_t events;  // what is registered (level mode)
    unsigned char *payload;
};

static int errors_shown;

static void complain(const struct conn *c, const char *what, int err) {
    if (errors_shown++ < 20)
        fprintf(stderr, "connection %d: %s%s%s (sent %zu/%zu, received %zu)\n", c->index, what, err ? ": " : "",
                err ? strerror(err) : "", c->sent, c->size, c->received);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fill(struct conn *c) {
    c->size = 2048 + ((size_t)c->index * 7919u) % 4096u;
    c->payload = malloc(c->size);
    if (!c->payload) {
        perror("malloc");
        exit(2);
    }
    uint32_t x = 0x9E3779B9u ^ (uint32_t)(c->index + 1) * 2654435761u;
    for (size_t i = 0; i < c->size; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        c->payload[i] = (unsigned char)(x >> 24);
    }
    // The connection's number in clear at the start, so that a crossed stream shows.
    snprintf((char *)c->payload, 16, "conn%06d:", c->index);
}

static void finish(int ep, struct conn *c, enum phase phase, int *open) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->phase = phase;
    (*open)--;
}

static void set_events(int ep, struct conn *c, uint32_t events) {
    if (c->events == events) return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
        perror("epoll_ctl MOD");
        exit(2);
    }
    c->events = events;
}

// Sends what it can; returns 0, or -1 after finishing the connection as failed.
static int pump_out(int ep, struct conn *c, int *open) {
    while (c->sent < c->size) {
        ssize_t n = send(c->fd, c->payload + c->sent, c->size - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            complain(c, "send", errno);
            finish(ep, c, FAILED, open);
            return -1;
        }
        c->sent += (size_t)n;
    }
    return 0;
}

// Reads and checks what it can; returns 0, or -1 once the connection is finished.
static int pump_in(int ep, struct conn *c, int *open, int *completed) {
    unsigned char buf[8192];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            complain(c, "recv", errno);
            finish(ep, c, FAILED, open);
            return -1;
        }
        if (n == 0) {
            complain(c, "end of stream before the whole echo", 0);
            finish(ep, c, FAILED, open);
            return -1;
        }
        if (c->received + (size_t)n > c->size) {
            complain(c, "more bytes than were sent", 0);
            finish(ep, c, FAILED, open);
            return -1;
        }
        if (memcmp(buf, c->payload + c->received, (size_t)n) != 0) {
            size_t at = 0;
            while (buf[at] == c->payload[c->received + at]) at++;
            char what[96];
            snprintf(what, sizeof what, "echo differs at byte %zu", c->received + at);
            complain(c, what, 0);
            finish(ep, c, FAILED, open);
            return -1;
        }
        c->received += (size_t)n;
        if (c->received == c->size) {
            (*completed)++;
            finish(ep, c, DONE, open);
            return -1;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 6 || (strcmp(argv[4], "edge") != 0 && strcmp(argv[4], "level") != 0)) {
        fprintf(stderr, "usage: %s IP PORT COUNT edge|level TIMEOUT_SECONDS\n", argv[0]);
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", argv[1]);
        return 2;
    }
    int count = atoi(argv[3]);
    int edge = strcmp(argv[4], "edge") == 0;
    double timeout = atof(argv[5]);
    if (count <= 0 || timeout <= 0) {
        fprintf(stderr, "bad count or timeout\n");
        return 2;
    }

    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < (rlim_t)count + 64) {
        limit.rlim_cur = (rlim_t)count + 64;
        if (limit.rlim_max < limit.rlim_cur) limit.rlim_max = limit.rlim_cur;
        if (setrlimit(RLIMIT_NOFILE, &limit) < 0) {
            perror("setrlimit RLIMIT_NOFILE");
            return 2;
        }
    }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        perror("epoll_create1");
        return 2;
    }
    struct conn *conns = calloc((size_t)count, sizeof *conns);
    if (!conns) {
        perror("calloc");
        return 2;
    }
    double started = now();
    int open = 0, connected = 0, completed = 0;
    for (int i = 0; i < count; i++) {
        struct conn *c = &conns[i];
        c->index = i;
        fill(c);
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) {
            fprintf(stderr, "socket %d: %s\n", i, strerror(errno));
            printf("FAIL socket %d: %s\n", i, strerror(errno));
            return 1;
        }
        open++;
        int r = connect(c->fd, (struct sockaddr *)&addr, sizeof addr);
        if (r < 0 && errno != EINPROGRESS) {
            complain(c, "connect", errno);
            close(c->fd);
            c->fd = -1;
            c->phase = FAILED;
            open--;
            continue;
        }
        c->phase = CONNECTING;
        c->events = edge ? EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET : EPOLLOUT;
        struct epoll_event ev = {.events = c->events, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
            perror("epoll_ctl ADD");
            return 2;
        }
    }

    struct epoll_event events[256];
    while (open > 0) {
        double left = started + timeout - now();
        if (left <= 0) break;
        int n = epoll_wait(ep, events, 256, (int)(left * 1000) + 1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 2;
        }
        for (int k = 0; k < n; k++) {
            struct conn *c = events[k].data.ptr;
            uint32_t got = events[k].events;
            if (c->fd < 0) continue;
            if (c->phase == CONNECTING) {
                if (!(got & (EPOLLOUT | EPOLLERR | EPOLLHUP))) continue;
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
                    complain(c, "getsockopt(SO_ERROR)", errno);
                    finish(ep, c, FAILED, &open);
                    continue;
                }
                if (err != 0 || !(got & EPOLLOUT)) {
                    complain(c, "connect failed", err);
                    finish(ep, c, FAILED, &open);
                    continue;
                }
                c->phase = STREAMING;
                connected++;
                if (!edge) set_events(ep, c, EPOLLIN | EPOLLOUT);
                got |= EPOLLIN;  // try at once: in edge mode the echo may already be there
            }
            if (got & EPOLLOUT) {
                if (pump_out(ep, c, &open) < 0) continue;
                if (!edge && c->sent == c->size) set_events(ep, c, EPOLLIN);
            }
            if (got & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                if (pump_in(ep, c, &open, &completed) < 0) continue;
            }
        }
    }

    long long bytes = 0;
    int unfinished = 0;
    for (int i = 0; i < count; i++) {
        if (conns[i].phase == DONE) bytes += (long long)conns[i].size;
        if (conns[i].phase == CONNECTING || conns[i].phase == STREAMING) {
            unfinished++;
            complain(&conns[i], conns[i].phase == CONNECTING ? "still connecting at the deadline"
                                                              : "still streaming at the deadline", 0);
        }
    }
    double elapsed = now() - started;
    if (completed == count) {
        printf("OK %d connected=%d bytes=%lld seconds=%.2f\n", completed, connected, bytes, elapsed);
        return 0;
    }
    printf("FAIL completed=%d of %d connected=%d unfinished=%d seconds=%.2f\n", completed, count, connected, unfinished,
           elapsed);
    return 1;
}
