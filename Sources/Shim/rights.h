// SCM_RIGHTS (unix(7)): descriptors that travel with a message's first byte. The control
// connection sends one with SOCKET and IDENTIFY, and its replies never carry any (any that
// comes is closed); a listener's pair brings one with each accept record.
#ifndef LVLIP_RIGHTS_H
#define LVLIP_RIGHTS_H

#include "shim.h"

#pragma GCC visibility push(hidden)

// Room for a control message holding one descriptor, aligned as a cmsghdr.
union rights_space {
    char space[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
};

// Makes `msg` carry descriptor `fd`, its control message in `control`.
void rights_attach(struct msghdr *msg, union rights_space *control, int fd);
// The descriptor in the first control message `msg` brought, or -1.
int rights_received(struct msghdr *msg);
// Closes every descriptor `msg` brought.
void rights_close_received(struct msghdr *msg);

// Writes all of buf to a stream, retrying EINTR; `pass_fd` (if >= 0) goes with its first byte.
int send_all(int fd, const void *buf, size_t len, int pass_fd);
// Reads at least `least` and at most `most` bytes, closing any descriptor that comes with
// them. Returns the count, or -1 (ECONNRESET at end of stream).
ssize_t recv_some(int fd, void *buf, size_t most, size_t least);
// Reads exactly len bytes.
int recv_all(int fd, void *buf, size_t len);

#pragma GCC visibility pop

#endif
