// SCM_RIGHTS: attaching a descriptor to a message, taking the ones a message brought, and
// the control connection's whole reads and writes, which carry them (rights.h).
#include "shim.h"
#include "rights.h"

#include <poll.h>
#include <string.h>

void rights_attach(struct msghdr *msg, union rights_space *control, int fd) {
    memset(control, 0, sizeof *control);
    msg->msg_control = control->space;
    msg->msg_controllen = sizeof control->space;
    struct cmsghdr *c = CMSG_FIRSTHDR(msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
}

int rights_received(struct msghdr *msg) {
    int fd = -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(msg);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

void rights_close_received(struct msghdr *msg) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < count; i++) {
            int received;
            memcpy(&received, CMSG_DATA(c) + (size_t)i * sizeof(int), sizeof received);
            get_close()(received);
        }
    }
}

int send_all(int fd, const void *buf, size_t len, int pass_fd) {
    const char *p = buf;
    while (len > 0) {
        struct iovec iov = {.iov_base = (void *)p, .iov_len = len};
        union rights_space control;
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        if (pass_fd >= 0) rights_attach(&msg, &control, pass_fd);
        ssize_t n = get_sendmsg()(fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        pass_fd = -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

// Waits in poll(POLLIN), never in recvmsg: when lvlipd reads a request, the kernel wakes
// whoever sleeps on the sender's socket to say it has room again (unix_write_space, EPOLLOUT),
// and a task asleep in recvmsg wakes for that, finds no reply and sleeps again (with every
// process on one CPU: two context switches per request). poll's wake-up looks at the events
// and lets that one pass.
ssize_t recv_some(int fd, void *buf, size_t most, size_t least) {
    size_t have = 0;
    // lvlipd answers most requests within its wake-up: poll for the answer before sleeping.
    int may_poll = busy_poll_window() > 0;
    int readable = may_poll;
    while (have < least) {
        if (!readable) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (poll(&p, 1, -1) < 0 && errno != EINTR) return -1;
            readable = 1;
        }
        struct iovec iov = {.iov_base = (char *)buf + have, .iov_len = most - have};
        union {
            char space[CMSG_SPACE(sizeof(int) * 4)];
            struct cmsghdr align;
        } control;
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                             .msg_controllen = sizeof control.space};
        ssize_t n = get_recvmsg()(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) return -1;
            readable = 0;
            if (may_poll) {
                // Whatever the polling finds, the read after it takes it or sleeps; a signal
                // meanwhile changes nothing, as this read restarts after one anyway.
                struct pollfd p = {.fd = fd, .events = POLLIN};
                readable = busy_poll(&p, NULL) > 0;
                may_poll = 0;
            }
            continue;
        }
        if (n == 0) {
            errno = ECONNRESET;
            return -1;
        }
        rights_close_received(&msg);
        have += (size_t)n;
    }
    return (ssize_t)have;
}

int recv_all(int fd, void *buf, size_t len) {
    return len == 0 || recv_some(fd, buf, len, len) == (ssize_t)len ? 0 : -1;
}
