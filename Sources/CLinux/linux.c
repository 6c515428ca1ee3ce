#include "CLinux.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <pthread.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

const uint32_t lvlip_EPOLLIN = EPOLLIN;
const uint32_t lvlip_EPOLLOUT = EPOLLOUT;
const uint32_t lvlip_EPOLLERR = EPOLLERR;
const uint32_t lvlip_EPOLLHUP = EPOLLHUP;
const uint32_t lvlip_EPOLLRDHUP = EPOLLRDHUP;
const uint32_t lvlip_EPOLLET = EPOLLET;

int lvlip_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int lvlip_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}

int lvlip_epoll_wait(int epfd, uint32_t *events, uint64_t *data, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        events[i] = evs[i].events;
        data[i] = evs[i].data.u64;
    }
    return n;
}

uint64_t lvlip_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void lvlip_realtime(uint32_t *sec, uint32_t *usec) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    *sec = (uint32_t)ts.tv_sec;
    *usec = (uint32_t)(ts.tv_nsec / 1000);
}

int lvlip_timerfd_create(void) {
    return timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
}

int lvlip_timerfd_set_absolute(int fd, uint64_t deadline_ns) {
    struct itimerspec spec;
    memset(&spec, 0, sizeof spec);
    if (deadline_ns != 0) {
        spec.it_value.tv_sec = (time_t)(deadline_ns / 1000000000ull);
        spec.it_value.tv_nsec = (long)(deadline_ns % 1000000000ull);
    }
    return timerfd_settime(fd, TFD_TIMER_ABSTIME, &spec, NULL);
}

int lvlip_timerfd_drain(int fd) {
    uint64_t count;
    ssize_t n = read(fd, &count, sizeof count);
    return n == (ssize_t)sizeof count ? 0 : -1;
}

int lvlip_signalfd_create(const int *signals, int count) {
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < count; i++) sigaddset(&set, signals[i]);
    int rc = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

int lvlip_signalfd_read(int fd) {
    struct signalfd_siginfo info;
    ssize_t n = read(fd, &info, sizeof info);
    if (n != (ssize_t)sizeof info) return -1;
    return (int)info.ssi_signo;
}

void lvlip_ignore_sigpipe(void) { signal(SIGPIPE, SIG_IGN); }

int lvlip_tap_attach(int fd, const char *name, char *out_name, int vnet_header) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet_header ? IFF_VNET_HDR : 0);
    if (strlen(name) >= IFNAMSIZ) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) return -1;
    memcpy(out_name, ifr.ifr_name, IFNAMSIZ);
    out_name[IFNAMSIZ - 1] = 0;
    return 0;
}

int lvlip_tap_enable_offload(int fd) {
    int size = (int)sizeof(struct virtio_net_hdr);
    if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) return -1;
    // Checksum offload and TCP segmentation offload, IPv4 and IPv6: the kernel may hand over
    // TCP segments of up to 64 KB with their checksum left for us (which we trust), instead
    // of MTU frames.
    return ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6);
}

static int interface_ioctl(const char *name, unsigned long request, struct ifreq *ifr) {
    if (strlen(name) >= IFNAMSIZ) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
    int rc = ioctl(s, request, ifr);
    int saved = errno;
    close(s);
    errno = saved;
    return rc;
}

int lvlip_interface_up(const char *name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    if (interface_ioctl(name, SIOCGIFFLAGS, &ifr) < 0) return -1;
    if (ifr.ifr_flags & IFF_UP) return 0;
    ifr.ifr_flags |= IFF_UP;
    return interface_ioctl(name, SIOCSIFFLAGS, &ifr);
}

int lvlip_interface_set_mtu(const char *name, int mtu) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_mtu = mtu;
    return interface_ioctl(name, SIOCSIFMTU, &ifr);
}

int lvlip_interface_mtu(const char *name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    return interface_ioctl(name, SIOCGIFMTU, &ifr) < 0 ? -1 : ifr.ifr_mtu;
}

static int fill_sockaddr_un(struct sockaddr_un *addr, const char *path) {
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr->sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strncpy(addr->sun_path, path, sizeof addr->sun_path - 1);
    return 0;
}

int lvlip_unix_listen(const char *path, int backlog) {
    struct sockaddr_un addr;
    if (fill_sockaddr_un(&addr, path) < 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, backlog) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int lvlip_unix_connect(const char *path) {
    struct sockaddr_un addr;
    if (fill_sockaddr_un(&addr, path) < 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int rc;
    do {
        rc = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int lvlip_accept(int fd) { return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

int lvlip_peer_credentials(int fd, int32_t *pid, uint32_t *uid, uint32_t *gid) {
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return -1;
    *pid = cred.pid;
    *uid = cred.uid;
    *gid = cred.gid;
    return 0;
}
