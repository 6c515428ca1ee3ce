// fuzz-shim: the shim's decoding of what lvlipd sends, under a hostile lvlipd.
//
// The shim's files are compiled into this program, so its interposed socket calls are the
// program's own. A thread of the harness plays lvlipd on a private socket (LVLIP_SOCKET is
// set by a constructor that runs before the shim's): it answers every request with a reply
// built from the input (results, references, states, names, option values of any length,
// and now and then a reply of the wrong type, tag or length, or a closed connection). The
// main thread runs a script from the same input: socket calls on shim sockets (nonblocking,
// so none waits on the network), and writes into lvlipd's ends of the sockets' pairs —
// datagram headers, error records, accept records with or without a descriptor, garbage —
// which the shim then decodes in recvmsg, recvfrom, accept and the error queue.
//
// What must hold: no crash or memory error (AddressSanitizer), no call that hangs (libFuzzer's
// -timeout), and after the script every descriptor it opened is closed again.
//
// Built by scripts/fuzz: with -fsanitize=fuzzer,address it is a fuzzer; with
// -DLVLIP_FUZZ_REPLAY it replays saved inputs (files or directories), as CI does.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "lvlip_ipc.h"

// MARK: - The input, shared by the script and the fake lvlipd

struct input {
    const uint8_t *bytes;
    size_t size, offset;
};

static pthread_mutex_t input_lock = PTHREAD_MUTEX_INITIALIZER;
static struct input script, replies;

static uint8_t take8(struct input *in) {
    return in->offset < in->size ? in->bytes[in->offset++] : 0;
}

static uint16_t take16(struct input *in) { return (uint16_t)(take8(in) | take8(in) << 8); }
static uint32_t take32(struct input *in) { return (uint32_t)take16(in) | (uint32_t)take16(in) << 16; }

// MARK: - The fake lvlipd

#define MAX_ENDS 64
static int daemon_ends[MAX_ENDS];  // lvlipd's ends of the sockets' pairs, from SOCKET
static int daemon_end_count;
static int listen_fd = -1;
static char socket_path[108];

static void keep_end(int fd) {
    pthread_mutex_lock(&input_lock);
    if (daemon_end_count < MAX_ENDS) {
        daemon_ends[daemon_end_count++] = fd;
        fd = -1;
    }
    pthread_mutex_unlock(&input_lock);
    if (fd >= 0) close(fd);
}

// Reads one request (and the descriptor that may come with it). 0: the connection ended.
static int read_request(int fd, struct lvlip_msg_header *h, uint8_t *body, size_t room, int *passed) {
    char control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {h, sizeof *h};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    ssize_t n = recvmsg(fd, &msg, MSG_WAITALL | MSG_CMSG_CLOEXEC);
    if (n != (ssize_t)sizeof *h || h->length > room) return 0;
    *passed = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(passed, CMSG_DATA(c), sizeof(int));
    if (h->length && recv(fd, body, h->length, MSG_WAITALL) != (ssize_t)h->length) {
        if (*passed >= 0) close(*passed);
        return 0;
    }
    return 1;
}

static void send_reply(int fd, uint16_t type, uint32_t tag, const void *body, uint32_t length) {
    pthread_mutex_lock(&input_lock);
    uint8_t mangle = take8(&replies);
    uint8_t amount = take8(&replies);
    pthread_mutex_unlock(&input_lock);
    struct lvlip_msg_header h = {length, (uint16_t)(type + 1), 0, tag};
    uint8_t extra[256] = {0};
    uint32_t extra_length = 0;
    // Now and then a reply the shim must refuse: another type or tag, a longer body than the
    // request's reply has, or half a reply and then lvlipd gone. (Never a reply promising
    // bytes that do not come on a connection that stays open: that is a stalled lvlipd, which
    // a synchronous call waits for as a syscall waits for the kernel.)
    if (mangle == 0xF1) h.type = (uint16_t)(h.type + 2);
    if (mangle == 0xF2) h.tag += 1;
    if (mangle == 0xF3) h.length += extra_length = amount;
    (void)!send(fd, &h, mangle == 0xF4 ? amount % sizeof h : sizeof h, MSG_NOSIGNAL);
    if (mangle == 0xF4) {
        shutdown(fd, SHUT_RDWR);
        return;
    }
    (void)!send(fd, body, length, MSG_NOSIGNAL);
    if (extra_length) (void)!send(fd, extra, extra_length, MSG_NOSIGNAL);
}

// An address as lvlipd writes one: IPv4 v4-mapped, or an IPv6 address with a scope id, or
// a family lvlipd never sends.
static void wire_address(struct input *in, struct lvlip_addr *a) {
    uint32_t v4 = take32(in);
    a->port = take16(in);
    uint8_t form = take8(in) % 4;
    memcpy(&a->addr[12], &v4, 4);
    if (form == 0) {
        a->addr[10] = a->addr[11] = 0xff;
        a->family = AF_INET;
    } else {
        a->addr[0] = form == 1 ? 0xfe : 0xfd;
        a->addr[1] = form == 1 ? 0x80 : 0x00;
        a->family = form == 3 ? take16(in) : AF_INET6;
        a->scope_id = form == 1 ? take8(in) : 0;
    }
}

static void answer(int fd, const struct lvlip_msg_header *h, int passed) {
    uint8_t out[sizeof(struct lvlip_opt_rep) + LVLIP_OPT_MAX_VALUE + 64];
    uint32_t length = 0;
    pthread_mutex_lock(&input_lock);
    int32_t result = take8(&replies) < 200 ? 0 : -(int32_t)(take8(&replies) % 120);
    switch (h->type) {
    case LVLIP_MSG_SOCKET:
    case LVLIP_MSG_IDENTIFY: {
        struct lvlip_socket_rep r = {result, take8(&replies) & 1 ? AF_INET6 : AF_INET, 1 + take8(&replies) % 3,
                                     take8(&replies) % 6, {take32(&replies), take32(&replies), take32(&replies)},
                                     take16(&replies), take8(&replies) & 1 ? IPPROTO_ICMP : 0};
        memcpy(out, &r, length = sizeof r);
        break;
    }
    case LVLIP_MSG_CONNECT:
    case LVLIP_MSG_NAME: {
        struct lvlip_name_rep r = {.result = result};
        wire_address(&replies, &r.addr);
        memcpy(out, &r, length = sizeof r);
        break;
    }
    case LVLIP_MSG_GETOPT: {
        uint32_t value = take16(&replies) % (LVLIP_OPT_MAX_VALUE + 40);
        struct lvlip_opt_rep r = {result, value};
        memcpy(out, &r, sizeof r);
        for (uint32_t i = 0; i < value; i++) out[sizeof r + i] = take8(&replies);
        length = sizeof r + value;
        break;
    }
    default: {
        struct lvlip_result r = {result, 0};
        memcpy(out, &r, length = sizeof r);
    }
    }
    uint8_t hang_up = take8(&replies);
    pthread_mutex_unlock(&input_lock);
    if (passed >= 0) keep_end(passed);
    if (hang_up == 0xEE) {
        shutdown(fd, SHUT_RDWR);  // lvlipd went away mid-request
        return;
    }
    send_reply(fd, h->type, h->tag, out, length);
}

// The end of an input: the fake lvlipd drops its connection and every end it holds, so each
// input starts from a connection the shim must open and greet again.
static int reset_pipe[2] = {-1, -1};
static pthread_mutex_t reset_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reset_done = PTHREAD_COND_INITIALIZER;
static int resets_requested, resets_done;

// Waits until `fd` is readable; 0 when a reset came first.
static int wait_for(int fd) {
    struct pollfd p[2] = {{fd, POLLIN, 0}, {reset_pipe[0], POLLIN, 0}};
    while (poll(p, 2, -1) < 0) {}
    return !(p[1].revents & POLLIN);
}

static void finish_reset(void) {
    char byte;
    (void)!read(reset_pipe[0], &byte, 1);
    pthread_mutex_lock(&input_lock);
    while (daemon_end_count) close(daemon_ends[--daemon_end_count]);
    pthread_mutex_unlock(&input_lock);
    pthread_mutex_lock(&reset_lock);
    resets_done++;
    pthread_cond_signal(&reset_done);
    pthread_mutex_unlock(&reset_lock);
}

static void serve(int fd) {
    struct lvlip_msg_header h;
    uint8_t body[sizeof(struct lvlip_opt_req) + LVLIP_OPT_MAX_VALUE + 64];
    int passed;
    while (wait_for(fd) && read_request(fd, &h, body, sizeof body, &passed)) {
        if (h.type == LVLIP_MSG_HELLO) {
            struct lvlip_hello_reply_body r = {LVLIP_IPC_MAGIC, LVLIP_IPC_VERSION, 0, 1, 0x0a000004, 0xffffff00, 0};
            pthread_mutex_lock(&input_lock);
            if (take8(&replies) == 0xF5) r.version = 99;
            pthread_mutex_unlock(&input_lock);
            send_reply(fd, LVLIP_MSG_HELLO, h.tag, &r, sizeof r);
            continue;
        }
        answer(fd, &h, passed);
    }
    close(fd);
}

static void *fake_lvlipd(void *unused) {
    (void)unused;
    for (;;) {
        if (!wait_for(listen_fd)) {
            finish_reset();
            continue;
        }
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        serve(fd);
        // serve() returned: the connection ended, or a reset is waiting.
        struct pollfd p = {reset_pipe[0], POLLIN, 0};
        if (poll(&p, 1, 0) == 1) finish_reset();
    }
    return NULL;
}

// Asks the fake lvlipd to drop everything, and waits until it has.
static void reset_fake_lvlipd(void) {
    pthread_mutex_lock(&reset_lock);
    int target = ++resets_requested;
    (void)!write(reset_pipe[1], "r", 1);
    while (resets_done < target) pthread_cond_wait(&reset_done, &reset_lock);
    pthread_mutex_unlock(&reset_lock);
}

// Before the shim's constructor (default priority): the shim reads LVLIP_SOCKET once, at load.
__attribute__((constructor(101))) static void start_fake_lvlipd(void) {
    snprintf(socket_path, sizeof socket_path, "/tmp/lvlip-fuzz-shim.%d.sock", (int)getpid());
    unlink(socket_path);
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strcpy(addr.sun_path, socket_path);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listen_fd, 16) < 0) {
        perror("fuzz-shim: fake lvlipd");
        exit(1);
    }
    setenv("LVLIP_SOCKET", socket_path, 1);
    if (pipe2(reset_pipe, O_CLOEXEC) < 0) {
        perror("fuzz-shim: pipe");
        exit(1);
    }
    pthread_t thread;
    pthread_create(&thread, NULL, fake_lvlipd, NULL);
}

__attribute__((destructor)) static void remove_socket(void) { unlink(socket_path); }

// MARK: - The script

#define MAX_SOCKETS 16
static int sockets[MAX_SOCKETS];
static int socket_count;

static int pick(void) { return socket_count ? sockets[take8(&script) % socket_count] : -1; }

static void keep_socket(int fd) {
    if (fd < 0) return;
    if (socket_count < MAX_SOCKETS) sockets[socket_count++] = fd;
    else close(fd);
}

static socklen_t address(struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    uint8_t kind = take8(&script);
    if (kind & 1) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = take16(&script);
        if (kind & 2) {  // v4-mapped
            a->sin6_addr.s6_addr[10] = a->sin6_addr.s6_addr[11] = 0xff;
            uint32_t v4 = take32(&script);
            memcpy(&a->sin6_addr.s6_addr[12], &v4, 4);
        } else {
            for (int i = 0; i < 16; i++) a->sin6_addr.s6_addr[i] = take8(&script);
        }
        a->sin6_scope_id = take8(&script);
        return (socklen_t)(kind & 4 ? take8(&script) % sizeof *a : sizeof *a);
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = kind & 8 ? AF_UNSPEC : AF_INET;
    a->sin_port = take16(&script);
    a->sin_addr.s_addr = take32(&script);
    return (socklen_t)(kind & 4 ? take8(&script) % sizeof *a : sizeof *a);
}

// lvlipd writes into its end of a socket's pair: a datagram header (maybe an error record,
// maybe an error-queue record with its details), an accept record with or without a
// descriptor, or garbage.
static void daemon_writes(void) {
    pthread_mutex_lock(&input_lock);
    int fd = daemon_end_count ? daemon_ends[take8(&script) % daemon_end_count] : -1;
    pthread_mutex_unlock(&input_lock);
    if (fd < 0) return;
    uint8_t out[2048];
    size_t length = 0;
    int passed = -1;
    switch (take8(&script) % 4) {
    case 0: {
        struct lvlip_dgram_header h = {0};
        wire_address(&script, &h.addr);
        h.flags = take16(&script) & 7;
        h.error = (int32_t)(take8(&script) % 120);
        h.magic = take8(&script) & 1 ? 0 : LVLIP_DGRAM_MAGIC;
        uint32_t local = take32(&script);
        memcpy(&h.local[12], &local, 4);
        h.ifindex = take16(&script);
        h.ttl = take8(&script);
        h.tos = take8(&script);
        memcpy(out, &h, length = sizeof h);
        if (h.flags & LVLIP_DGRAM_ERRQUEUE) {
            struct lvlip_dgram_error e = {0};
            e.type = take8(&script);
            e.code = take8(&script);
            e.origin = take8(&script) % 4;
            e.info = take32(&script);
            wire_address(&script, &e.offender);
            wire_address(&script, &e.destination);
            memcpy(out + length, &e, sizeof e);
            length += sizeof e;
        }
        break;
    }
    case 1: {
        struct lvlip_accept_record r = {0};
        r.magic = take8(&script) & 1 ? 0 : LVLIP_ACCEPT_MAGIC;
        r.size = take8(&script) & 1 ? 0 : sizeof r;
        r.ref.index = take32(&script);
        r.ref.generation = take32(&script);
        r.ref.token = take32(&script);
        wire_address(&script, &r.local);
        wire_address(&script, &r.peer);
        memcpy(out, &r, length = sizeof r);
        int pair[2];
        if (take8(&script) % 4 && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0) {
            passed = pair[0];
            keep_end(pair[1]);
        }
        break;
    }
    default:
        break;
    }
    size_t extra = take8(&script);
    for (size_t i = 0; i < extra && length < sizeof out; i++) out[length++] = take8(&script);
    char control[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec iov = {out, length};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (passed >= 0) {
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &passed, sizeof passed);
    }
    (void)!sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (passed >= 0) close(passed);
}

static void receive(int fd) {
    uint8_t data[2048], control[256];
    struct sockaddr_storage from;
    struct iovec iov = {data, take16(&script) % sizeof data};
    struct msghdr msg = {.msg_name = &from, .msg_namelen = take8(&script) % (sizeof from + 1), .msg_iov = &iov,
                         .msg_iovlen = 1, .msg_control = control, .msg_controllen = take8(&script) % sizeof control};
    int flags = MSG_DONTWAIT | (take8(&script) & 1 ? MSG_ERRQUEUE : 0) | (take8(&script) & 1 ? MSG_PEEK : 0);
    if (recvmsg(fd, &msg, flags) < 0) return;
    // Descriptors that came through to the program (a stream socket's pair carries what lvlipd
    // sends, as the kernel passes it on) are the program's to close.
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int passed;
            memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof passed);
            close(passed);
        }
    }
}

static void option(int fd) {
    static const int levels[] = {SOL_SOCKET, IPPROTO_IP, IPPROTO_TCP, IPPROTO_IPV6, IPPROTO_UDP, 255};
    uint8_t value[LVLIP_OPT_MAX_VALUE + 64];
    int level = levels[take8(&script) % 6], name = take8(&script) % 80;
    socklen_t length = take16(&script) % sizeof value;
    for (socklen_t i = 0; i < length && i < 16; i++) value[i] = take8(&script);
    if (take8(&script) & 1) (void)!setsockopt(fd, level, name, value, length);
    else (void)!getsockopt(fd, level, name, value, &length);
}

static void step(void) {
    struct sockaddr_storage ss;
    socklen_t len;
    int fd;
    switch (take8(&script) % 14) {
    case 0: {
        static const int types[] = {SOCK_STREAM, SOCK_DGRAM, SOCK_RAW};
        int type = types[take8(&script) % 3];
        keep_socket(socket(take8(&script) & 1 ? AF_INET6 : AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC,
                           type == SOCK_RAW ? IPPROTO_ICMP : 0));
        break;
    }
    case 1: len = address(&ss); (void)!connect(pick(), (struct sockaddr *)&ss, len); break;
    case 2: len = address(&ss); (void)!bind(pick(), (struct sockaddr *)&ss, len); break;
    case 3: (void)!listen(pick(), take8(&script)); break;
    case 4:
        len = take8(&script) % (sizeof ss + 1);
        if (take8(&script) & 1) (void)!getsockname(pick(), (struct sockaddr *)&ss, &len);
        else (void)!getpeername(pick(), (struct sockaddr *)&ss, &len);
        break;
    case 5: option(pick()); break;
    case 6: fd = pick(); if (fd >= 0) receive(fd); break;
    case 7:
        len = take8(&script) % (sizeof ss + 1);
        keep_socket(accept4(pick(), (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC));
        break;
    case 8: {
        uint8_t payload[512];
        size_t n = take16(&script) % sizeof payload;
        memset(payload, take8(&script), n);
        len = address(&ss);
        (void)!sendto(pick(), payload, n, MSG_DONTWAIT | MSG_NOSIGNAL, take8(&script) & 1 ? (struct sockaddr *)&ss : NULL,
                      len);
        break;
    }
    case 9: daemon_writes(); break;
    case 10: (void)!shutdown(pick(), take8(&script) % 3); break;
    case 11: {
        int i = socket_count ? take8(&script) % socket_count : -1;
        if (i >= 0) {
            close(sockets[i]);
            sockets[i] = sockets[--socket_count];
        }
        break;
    }
    case 12: keep_socket(dup(pick())); break;
    default: {
        int value = 0;
        fd = pick();
        (void)!ioctl(fd, FIONREAD, &value);
        struct pollfd p = {fd, POLLIN | POLLOUT, 0};
        (void)!poll(&p, 1, 0);
    }
    }
}

// Open sockets: what the shim makes and could leak. (Other descriptors come and go with
// libFuzzer itself, which starts a symbolizer over pipes when it reports new coverage.)
static int open_descriptors(void) {
    int count = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[300], target[300] = "";
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        if (readlink(path, target, sizeof target - 1) > 0 && strncmp(target, "socket:", 7) == 0) count++;
    }
    closedir(d);
    return count;
}

static void list_descriptors(void) {
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[300], target[300] = "";
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        (void)!readlink(path, target, sizeof target - 1);
        int domain = -1, type = -1;
        socklen_t l = sizeof domain;
        getsockopt(atoi(e->d_name), SOL_SOCKET, SO_DOMAIN, &domain, &l);
        l = sizeof type;
        getsockopt(atoi(e->d_name), SOL_SOCKET, SO_TYPE, &type, &l);
        fprintf(stderr, "  %s -> %s (domain %d, type %d)\n", e->d_name, target, domain, type);
    }
    if (d) closedir(d);
}

// The shim's own (compiled in, so its hidden symbols are the harness's to use).
extern int ctl_fd;
extern pthread_mutex_t ctl_lock;
void ctl_drop(void);

// The end of an input, on both sides: the fake lvlipd drops its connection and its ends,
// and the shim drops its connection as it does when lvlipd goes away (closing the copies of
// lvlipd's ends it kept for SOCKET requests whose replies never came).
static void end_connection(void) {
    reset_fake_lvlipd();
    pthread_mutex_lock(&ctl_lock);
    ctl_drop();
    pthread_mutex_unlock(&ctl_lock);
}

static int run_one(const uint8_t *data, size_t size) {
    end_connection();
    int before = open_descriptors();
    // The first half of the input is the script, the rest the fake lvlipd's replies.
    pthread_mutex_lock(&input_lock);
    script = (struct input){data, size / 2, 0};
    replies = (struct input){data + size / 2, size - size / 2, 0};
    pthread_mutex_unlock(&input_lock);
    for (int steps = 0; script.offset < script.size && steps < 64; steps++) step();
    while (socket_count) close(sockets[--socket_count]);
    end_connection();
    // Every descriptor the script opened is closed, and neither side holds a connection: what
    // is open now and was not before, the shim leaked.
    int after = open_descriptors();
    if (after != before) {
        fprintf(stderr, "fuzz-shim: %d sockets open before the input, %d after:\n", before, after);
        list_descriptors();
        abort();
    }
    return 0;
}

#ifdef LVLIP_FUZZ_REPLAY
static int replay(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    static uint8_t buffer[1 << 20];
    size_t n = fread(buffer, 1, sizeof buffer, f);
    fclose(f);
    run_one(buffer, n);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: fuzz-shim FILE|DIRECTORY...\n  replays saved inputs (scripts/fuzz fuzzes)\n");
        return 2;
    }
    int count = 0;
    for (int i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        if (!d) {
            if (replay(argv[i]) < 0) return fprintf(stderr, "fuzz-shim: cannot read %s\n", argv[i]), 1;
            count++;
            continue;
        }
        struct dirent *e;
        char path[4096];
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            if (replay(path) < 0) return fprintf(stderr, "fuzz-shim: cannot read %s\n", path), 1;
            count++;
        }
        closedir(d);
    }
    printf("fuzz-shim: %d inputs replayed, no crash\n", count);
    return 0;
}
#else
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return run_one(data, size); }
#endif
