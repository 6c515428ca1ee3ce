// The control connection to lvlipd: opened when the shim loads and, for each fork child, by
// the parent just before the fork; greeted with HELLO; opened again when lost; kept out of
// the program's way. The requests that travel on it: request.c.
//
// Holding this connection is what lets a process use lvlip: a program that drops its
// privileges after it was opened (nginx workers, memcached -u) keeps it, as a kernel socket
// opened before setuid keeps working. lvlipd reads the sender's credentials with every
// request (SO_PASSCRED), so what a request may do depends on who makes it now (docs/shim.md,
// "Credentials").
#include "shim.h"
#include "rights.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/lvlip/lvlipd.sock"
// The connection sits at or above this number, out of the way of the program's descriptors
// and of its dup2 targets.
#define CONTROL_FD_FLOOR 768

pthread_mutex_t ctl_lock = PTHREAD_MUTEX_INITIALIZER;
int ctl_fd = -1;
uint32_t stack_address, stack_netmask, stack_gateway;
static uint64_t ctl_inode;
static int warned;
static int ctl_greeted;  // HELLO_REPLY read on ctl_fd
static int ctl_lost;     // the program closed ctl_fd (we could not keep it open)
static int child_ctl_fd = -1;  // opened for the child of a fork under way

// Read once at load: programs clear their environment (nginx workers keep only TZ) and
// still open their control connection after fork.
static char socket_path_copy[4096];

static void load_socket_path(void) {
    const char *p = getenv("LVLIP_SOCKET");
    if (!p || !*p) p = DEFAULT_SOCKET;
    snprintf(socket_path_copy, sizeof socket_path_copy, "%s", p);
}

static const char *socket_path(void) {
    if (!socket_path_copy[0]) load_socket_path();
    return socket_path_copy;
}

void say(const char *format, ...) {
    char line[512];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(line, sizeof line, format, args);
    va_end(args);
    if (n > 0) (void)!get_write()(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

void warn_unreachable(const char *why, int err) {
    if (__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED)) return;
    say("lvlip: cannot reach lvlipd at %s: %s%s\n", socket_path(), why, err ? strerror(err) : "");
}

static int close_keeping_errno(int fd) {
    int e = errno;
    get_close()(fd);
    errno = e;
    return -1;
}

// A connection to lvlipd's socket, close-on-exec, at CONTROL_FD_FLOOR or above.
//
// `waiting`: whether to wait while lvlipd's accept queue is full. At load and at fork the
// shim does not (a stopped or swamped lvlipd must not hang every program that starts); the
// first socket call then connects again, waiting.
static int open_connection(int waiting) {
    const char *path = socket_path();
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) return fail(ENAMETOOLONG);
    strcpy(addr.sun_path, path);
    int fd = get_socket()(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (waiting ? 0 : SOCK_NONBLOCK), 0);
    if (fd < 0) return -1;
    if (get_connect()(fd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        (!waiting && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0))
        return close_keeping_errno(fd);
    int high = fcntl(fd, F_DUPFD_CLOEXEC, CONTROL_FD_FLOOR);
    if (high >= 0) {
        get_close()(fd);
        fd = high;
    }
    return fd;
}

// Connects to lvlipd and sends HELLO without waiting for the reply (read by ctl_greet).
// Returns the descriptor, or -1 with errno.
static int ctl_connect(int waiting) {
    int fd = open_connection(waiting);
    if (fd < 0) return -1;
    struct lvlip_hello_msg hello = {
        .header = {.length = sizeof hello.body, .type = LVLIP_MSG_HELLO},
        .body = {.magic = LVLIP_IPC_MAGIC, .version = LVLIP_IPC_VERSION, .pid = (int32_t)getpid()},
    };
    if (send_all(fd, &hello, sizeof hello, -1) < 0) return close_keeping_errno(fd);
    return fd;
}

// The connection `fd` becomes ours, its HELLO reply still to be read.
static void ctl_adopt(int fd) {
    ctl_fd = fd;
    ctl_inode = inode_of(fd);
    ctl_greeted = 0;
}

// With ctl_lock held: reads the HELLO reply, which comes before any other. -1: dropped.
static int ctl_greet(void) {
    struct lvlip_hello_reply reply;
    if (recv_all(ctl_fd, &reply.header, sizeof reply.header) < 0) {
        int e = errno;
        ctl_drop();
        warn_unreachable(e == ECONNRESET ? "lvlipd closed the connection (see its log)" : "handshake failed: ",
                         e == ECONNRESET ? 0 : e);
        return -1;
    }
    // Another version answers ERROR (shorter) and closes: the header says enough.
    if (reply.header.type != LVLIP_MSG_HELLO_REPLY || reply.header.length != sizeof reply.body ||
        recv_all(ctl_fd, &reply.body, sizeof reply.body) < 0 || reply.body.version != LVLIP_IPC_VERSION) {
        ctl_drop();
        warn_unreachable("the daemon speaks another protocol version", 0);
        return -1;
    }
    ctl_greeted = 1;
    stack_address = reply.body.address;
    stack_netmask = reply.body.netmask;
    stack_gateway = reply.body.gateway;
    return 0;
}

// With ctl_lock held: a new connection, waiting for lvlipd to accept it. -1: none, and
// stderr says why.
static int reconnect(void) {
    int fd = ctl_connect(1);
    if (fd < 0) {
        int e = errno;
        char why[160] = "";
        // Started as, or exec'd after becoming, a user the socket does not admit; or the
        // program closed the connection it had.
        if (e == EACCES || e == EPERM)
            snprintf(why, sizeof why, "%suid %u may not open it%s: ", ctl_lost ? "the program closed lvlip's connection, and " : "",
                     (unsigned)geteuid(), ctl_lost ? " again" : " (see lvlipd --group)");
        warn_unreachable(why, e);
        return -1;
    }
    ctl_adopt(fd);
    return 0;
}

int ctl_ready(void) {
    if (ctl_fd >= 0 && inode_of(ctl_fd) != ctl_inode) {
        // The program closed our descriptor behind our back (a raw close_range syscall):
        // a different file under the number means it is gone.
        ctl_fd = -1;
        ctl_drop();
        ctl_lost = 1;
    }
    if ((ctl_fd < 0 && reconnect() < 0) || (!ctl_greeted && ctl_greet() < 0)) return fail(ENETDOWN);
    return 0;
}

void ctl_drop(void) {
    if (ctl_fd >= 0) get_close()(ctl_fd);
    ctl_fd = -1;
    ctl_greeted = 0;
    requests_lost();
}

void protect_control(int fd) {
    pthread_mutex_lock(&ctl_lock);
    if (fd == ctl_fd) {
        int moved = fcntl(ctl_fd, F_DUPFD_CLOEXEC, fd + 1);
        if (moved >= 0) {
            get_close()(ctl_fd);
            ctl_fd = moved;
        } else {
            ctl_drop();
        }
    }
    pthread_mutex_unlock(&ctl_lock);
}

// MARK: - fork

static void before_fork(void) {
    // The child gets its own connection, opened now by the parent (whose credentials may be
    // the ones that can open it: the child may drop them before its first socket call).
    // What is held is sent and every reply read first, so that the sockets both will hold
    // are named (and the child does not send the parent's requests again).
    pthread_mutex_lock(&ctl_lock);
    settle_due();
    child_ctl_fd = ctl_connect(0);
}

static void after_fork_parent(void) {
    if (child_ctl_fd >= 0) get_close()(child_ctl_fd);
    child_ctl_fd = -1;
    pthread_mutex_unlock(&ctl_lock);
}

static void after_fork_child(void) {
    pthread_mutex_init(&ctl_lock, NULL);
    fdtable_after_fork_child();
    errqueue_after_fork_child();
    ctl_drop();  // our copy of the parent's connection
    ctl_lost = 0;
    if (child_ctl_fd >= 0) ctl_adopt(child_ctl_fd);
    child_ctl_fd = -1;
}

__attribute__((constructor)) static void shim_init(void) {
    load_socket_path();
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
    // The connection is opened now, with the credentials the program starts with; if lvlipd
    // cannot be reached yet, the first socket call tries again (and says why it failed).
    int fd = ctl_connect(0);
    if (fd >= 0) ctl_adopt(fd);
}
