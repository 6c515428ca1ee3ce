// Linux interfaces that Swift's Glibc module does not expose, as small C wrappers.
// _GNU_SOURCE is set in the target's cSettings, never here: defining it in a header that
// Swift imports changes fd_set and friends for every importer.
#ifndef LVLIP_CLINUX_H
#define LVLIP_CLINUX_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/epoll.h>
#include <signal.h>

#include "lvlip_ipc.h"

// epoll event bits as plain integers (Swift imports EPOLLIN as an enum struct).
extern const uint32_t lvlip_EPOLLIN;
extern const uint32_t lvlip_EPOLLOUT;
extern const uint32_t lvlip_EPOLLERR;
extern const uint32_t lvlip_EPOLLHUP;
extern const uint32_t lvlip_EPOLLRDHUP;
extern const uint32_t lvlip_EPOLLET;

int lvlip_epoll_create(void);
int lvlip_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
// Waits for events; fills parallel arrays events/data. Returns count or -1 with errno.
int lvlip_epoll_wait(int epfd, uint32_t *events, uint64_t *data, int max, int timeout_ms);

// CLOCK_MONOTONIC in nanoseconds.
uint64_t lvlip_monotonic_ns(void);
// CLOCK_REALTIME as seconds and microseconds (for pcap timestamps).
void lvlip_realtime(uint32_t *sec, uint32_t *usec);

// A non-blocking, close-on-exec timerfd on CLOCK_MONOTONIC.
int lvlip_timerfd_create(void);
// Arms the timer at an absolute CLOCK_MONOTONIC time in ns; 0 disarms.
int lvlip_timerfd_set_absolute(int fd, uint64_t deadline_ns);
// Reads the expiration count; returns 0 on success, -1 with errno (EAGAIN when none).
int lvlip_timerfd_drain(int fd);

// Blocks the given signals in this thread and returns a non-blocking signalfd for them.
int lvlip_signalfd_create(const int *signals, int count);
// Reads one signal; returns its number, or -1 with errno (EAGAIN when none pending).
int lvlip_signalfd_read(int fd);
void lvlip_ignore_sigpipe(void);

// Attaches an open /dev/net/tun fd to TAP interface `name` (IFF_TAP | IFF_NO_PI).
// Writes the kernel's interface name to out_name (IFNAMSIZ bytes). -1 with errno on error.
int lvlip_tap_attach(int fd, const char *name, char *out_name, int vnet_header);
// On a TAP attached with a vnet header: checksum and TCP segmentation offload (TSO4).
int lvlip_tap_enable_offload(int fd);
// Size of struct virtio_net_hdr, the header before every frame on such a TAP.
#define LVLIP_VNET_HEADER_SIZE 10
// Sets IFF_UP on an interface (the kernel side of our TAP); -1 with errno on error.
int lvlip_interface_up(const char *name);
// Sets an interface's MTU; -1 with errno on error.
int lvlip_interface_set_mtu(const char *name, int mtu);
// Reads an interface's MTU through an AF_INET ioctl socket; -1 with errno on error.
int lvlip_interface_mtu(const char *name);

// AF_UNIX stream sockets (non-blocking, close-on-exec).
int lvlip_unix_listen(const char *path, int backlog);
int lvlip_unix_connect(const char *path);
int lvlip_accept(int fd);
// SO_PEERCRED of a connected AF_UNIX socket.
int lvlip_peer_credentials(int fd, int32_t *pid, uint32_t *uid, uint32_t *gid);

// The socket service (docs/ipc.md): a connected AF_UNIX stream pair for an accepted
// connection, close-on-exec, both ends blocking (lvlipd uses MSG_DONTWAIT on its end).
int lvlip_stream_pair(int *app_end, int *daemon_end);
// 1 when `fd` is one end of a socketpair(AF_UNIX, `type`): connected, to a peer without a
// name (so not an end lvlipd holds, which it names, nor lvlipd's own listening socket).
int lvlip_is_pair_end(int fd, int type);
// Binds lvlipd's end of a stack socket's pair to its abstract name,
// LVLIP_PAIR_NAME_PREFIX "<daemon pid>-<slot>-<generation>" (docs/ipc.md, "Who makes the pair").
int lvlip_bind_pair_name(int fd, int daemon_pid, uint32_t slot, uint32_t generation);
// sendmsg of one buffer with one descriptor attached (fd < 0: none); non-blocking, no SIGPIPE.
ssize_t lvlip_send_with_fd(int sock, const void *buf, size_t len, int fd);
// The sender's credentials of what one recvmsg read (SCM_CREDENTIALS, with SO_PASSCRED set):
// the kernel's record of who sent it, at the time it was sent.
struct lvlip_credentials {
    int32_t pid;
    uint32_t uid, gid;
    int32_t valid;
};
// Non-blocking recvmsg; received descriptors (close-on-exec) land in fds, their count in
// *nfds (negative, -(count + 1), when the kernel dropped some for lack of room). With SO_PASSCRED
// set on `sock`, *creds (if given) says who sent the bytes read (valid 0: not known).
ssize_t lvlip_recv_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds,
                            struct lvlip_credentials *creds);
// Non-blocking, SIGPIPE-free write of up to two buffers.
ssize_t lvlip_writev2(int fd, const void *a, size_t alen, const void *b, size_t blen);
// writev of two buffers (any descriptor).
ssize_t lvlip_writev_plain(int fd, const void *a, size_t alen, const void *b, size_t blen);
int lvlip_set_int_option(int fd, int level, int name, int value);
// Allocations below `threshold` bytes come from the heap, not a fresh mmap, and the heap
// keeps some free memory at its top rather than shrinking at once (mallopt).
void lvlip_malloc_prefer_heap(int threshold);
// How many CPUs this thread may run on (its affinity mask); 1 if it cannot be read.
int lvlip_usable_cpus(void);
// The abstract name (without its leading NUL) of the AF_UNIX socket `fd` is connected to,
// NUL-terminated; -1 if it has none or it does not fit.
int lvlip_peer_abstract_name(int fd, char *name, size_t room);
int lvlip_shutdown_write(int fd);

// Figures for Linux's struct tcp_info (TCP_INFO), filled in C so the layout is the kernel's.
struct lvlip_tcp_info_source {
    uint8_t state, ca_state, retransmits, backoff, options, snd_wscale, rcv_wscale, reserved;
    uint32_t rto_us, snd_mss, rcv_mss, unacked, pmtu, rtt_us, rttvar_us, snd_ssthresh, snd_cwnd;
    uint32_t total_retrans, segs_out, segs_in, notsent_bytes, snd_wnd, rcv_wnd;
    uint32_t lost, retrans, dsack_dups, reord_seen;
    uint64_t bytes_acked, bytes_received, bytes_retrans;
};
// The length of Linux 6.18's struct tcp_info: what TCP_INFO gives at most.
#define LVLIP_TCP_INFO_SIZE 280
size_t lvlip_tcp_info_size(void);
size_t lvlip_fill_tcp_info(void *out, size_t room, const struct lvlip_tcp_info_source *src);

#endif
