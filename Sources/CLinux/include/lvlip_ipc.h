// The lvlip IPC wire format, shared by the Swift daemon and the C shim so they cannot drift.
// Documented in docs/ipc.md. All integers are little-endian (the peers share one host); the
// structs below have no padding (every field sits at a multiple of its size).
#ifndef LVLIP_IPC_H
#define LVLIP_IPC_H

#include <stdint.h>

#define LVLIP_IPC_MAGIC 0x504c564cu /* "LVLP" read as little-endian bytes */
#define LVLIP_IPC_VERSION 7u
// Upper bound on a message body: anything larger is a protocol violation.
#define LVLIP_IPC_MAX_BODY (256u * 1024u)
#define LVLIP_IPC_HEADER_SIZE 12u
// The send buffer of the application's end of a socket's pair (SO_SNDBUFFORCE where
// allowed): set by the shim for a UDP socket and after a connect (it starts minimal
// there), by lvlipd for an accepted connection.
#define LVLIP_APP_SEND_BUFFER (512u * 1024u)

// The smallest MSS lvlipd sends with, whatever the peer announces (TCPConnection.minimumMSS):
// a write of at most this many bytes is one segment. The shim lets a TCP_NODELAY wait past a
// socket's first write this small (Nagle's algorithm cannot hold any of it back).
#define LVLIP_MIN_MSS 64

// lvlipd's end of every stack socket's pair has an abstract name that starts so
// ("lvlip-<daemon pid>-<slot>-<generation>"): a descriptor whose peer is named so is a stack
// socket, which the shim then identifies with IDENTIFY.
#define LVLIP_PAIR_NAME_PREFIX "lvlip-"
// SETOPT carries at most this many value bytes, and GETOPT's room is at most this.
#define LVLIP_OPT_MAX_VALUE 1024u

// Every message: a 12-byte header followed by `length` bytes of body.
//   uint32 length   body bytes after the header
//   uint16 type     enum lvlip_msg_type
//   uint16 flags    LVLIP_FLAG_* below; other bits must be 0
//   uint32 tag      chosen by the client, echoed in the reply
// One file descriptor travels with the message (SCM_RIGHTS on its first byte).
#define LVLIP_FLAG_FD 0x0001u
// SETOPT only: the client reads no reply and lvlipd sends none (an option lvlipd cannot
// refuse: the shim's setsockopt has already returned 0).
#define LVLIP_FLAG_NO_REPLY 0x0002u

struct lvlip_msg_header {
    uint32_t length;
    uint16_t type;
    uint16_t flags;
    uint32_t tag;
};

// HELLO's body; HELLO_REPLY's starts the same (with the daemon's pid).
struct lvlip_hello {
    uint32_t magic;    // LVLIP_IPC_MAGIC
    uint16_t version;  // LVLIP_IPC_VERSION
    uint16_t zero;
    int32_t pid;
};

struct lvlip_hello_msg {
    struct lvlip_msg_header header;
    struct lvlip_hello body;
};

// HELLO_REPLY: the daemon's hello and the stack's IPv4 interface (host byte order; gateway 0:
// none), what the shim refuses datagrams by before they reach lvlipd (docs/ipc.md).
struct lvlip_hello_reply_body {
    uint32_t magic;
    uint16_t version;
    uint16_t zero;
    int32_t pid;
    uint32_t address, netmask, gateway;
};

struct lvlip_hello_reply {
    struct lvlip_msg_header header;
    struct lvlip_hello_reply_body body;
};

// ERROR's body starts with this, followed by a UTF-8 reason (not terminated).
struct lvlip_error {
    int32_t error;               // a positive errno
};

enum lvlip_msg_type {
    LVLIP_MSG_HELLO = 1,         // client -> daemon: uint32 magic, uint16 version, uint16 0, int32 pid
    LVLIP_MSG_HELLO_REPLY = 2,   // daemon -> client: as HELLO with the daemon's pid, then uint32 address,
                                 // uint32 netmask, uint32 gateway (0: none) of the stack's interface
    LVLIP_MSG_ERROR = 3,         // daemon -> client: int32 errno, UTF-8 reason
    LVLIP_MSG_STATS = 16,        // client -> daemon: empty body
    LVLIP_MSG_STATS_REPLY = 17,  // daemon -> client: UTF-8 lines "Name value\n"
    LVLIP_MSG_SOCKETS = 18,      // client -> daemon: empty body
    LVLIP_MSG_SOCKETS_REPLY = 19,  // daemon -> client: UTF-8 lines, one per socket, "key=value" fields

    // Socket operations. Each request is answered by the type + 1, whose body starts with
    // int32 result: 0, or a negative errno.
    LVLIP_MSG_SOCKET = 32,       // struct lvlip_socket_req + fd (lvlipd's end of a new AF_UNIX pair)
                                 // -> struct lvlip_socket_rep
    LVLIP_MSG_IDENTIFY = 34,     // empty body + fd -> struct lvlip_socket_rep
    LVLIP_MSG_BIND = 36,         // struct lvlip_addr_req -> struct lvlip_result
    LVLIP_MSG_LISTEN = 38,       // struct lvlip_int_req -> struct lvlip_result
    LVLIP_MSG_CONNECT = 40,      // struct lvlip_addr_req -> struct lvlip_name_rep
    LVLIP_MSG_SHUTDOWN = 42,     // struct lvlip_int_req -> struct lvlip_result
    LVLIP_MSG_NAME = 44,         // struct lvlip_int_req (0 local, 1 peer) -> struct lvlip_name_rep
    LVLIP_MSG_SETOPT = 46,       // struct lvlip_opt_req + value -> struct lvlip_result
    LVLIP_MSG_GETOPT = 48,       // struct lvlip_opt_req -> struct lvlip_opt_rep + value
    LVLIP_MSG_STATUS = 50,       // struct lvlip_int_req (enum lvlip_status_kind) -> struct lvlip_result
};

// A stack socket as the daemon knows it: slot, generation and an unguessable token. The
// token is handed only to whoever holds the socket's descriptor (SOCKET, accept, IDENTIFY).
// A client may also name a socket its SOCKET request made before the reply came back:
// index LVLIP_REF_PENDING, generation = that request's tag, token 0 (valid for the
// connection's last LVLIP_PENDING_REFS SOCKET requests).
struct lvlip_ref {
    uint32_t index;
    uint32_t generation;
    uint64_t token;
};
#define LVLIP_REF_PENDING 0xffffffffu
#define LVLIP_PENDING_REFS 64u

// A socket address of either family. The 16 bytes hold an IPv6 address, or an IPv4 one as
// ::ffff:a.b.c.d (RFC 4291 2.5.5.2), the form the stack names both families' endpoints in and
// the one a dual-stack AF_INET6 socket shows its IPv4 peers in. `family` is how the
// application spelled it (shim -> daemon) or the address's own family (daemon -> shim:
// AF_INET for a v4-mapped address); the shim writes it back as the socket's family asks.
// Any other family, or AF_INET with an address that is not v4-mapped, is malformed.
struct lvlip_addr {
    uint8_t addr[16];            // network byte order
    uint16_t port;               // host byte order
    uint16_t family;             // AF_INET, AF_INET6, or AF_UNSPEC: CONNECT dissolves a datagram
                                 // socket's association
    uint32_t flowinfo;           // sockaddr_in6's sin6_flowinfo, as given (network byte order)
    uint32_t scope_id;           // sin6_scope_id: the kernel's index of the interface (the TAP's,
                                 // as the application's if_nametoindex gives it) for link-local
                                 // addresses, else 0
    uint32_t reserved;           // 0
};

struct lvlip_result {
    int32_t result;
    uint32_t reserved;
};

struct lvlip_socket_req {
    int32_t family;              // AF_INET or AF_INET6
    int32_t type;                // SOCK_STREAM or SOCK_DGRAM (SOCK_NONBLOCK etc. are the shim's)
    int32_t protocol;            // 0, IPPROTO_TCP or IPPROTO_UDP
    uint32_t reserved;
};

struct lvlip_socket_rep {
    int32_t result;
    int32_t family;
    int32_t type;
    uint32_t state;              // enum lvlip_socket_state
    struct lvlip_ref ref;
    uint32_t headroom;           // sockets the user may still open (the shim creates sockets
                                 // without waiting for the reply only while this is large)
    uint32_t protocol;           // IPPROTO_ICMP for an ICMP socket, else 0
};

enum lvlip_socket_state {
    LVLIP_STATE_UNCONNECTED = 0,
    LVLIP_STATE_CONNECTING = 1,
    LVLIP_STATE_CONNECTED = 2,
    LVLIP_STATE_LISTENING = 3,
    LVLIP_STATE_CLOSED = 4,
};

struct lvlip_int_req {
    struct lvlip_ref ref;
    int32_t value;
    uint32_t reserved;
};

// BIND and CONNECT. For CONNECT, `filler` is the number of bytes the shim wrote into the
// socket so that it is not writable before the handshake completes (docs/ipc.md), and
// `flags` may hold LVLIP_CONNECT_WAITS or LVLIP_CONNECT_FILLER; for BIND both are 0.
struct lvlip_addr_req {
    struct lvlip_ref ref;
    struct lvlip_addr addr;
    uint32_t filler;
    uint32_t flags;
};

// CONNECT from a blocking socket, whose caller waits for the handshake: if it completes
// before lvlipd writes the reply (a peer on the host answers within the same wake-up; lvlipd
// has then read the filler), the reply says 0 rather than -EINPROGRESS. The shim sends it
// without filler: an -EINPROGRESS answer to a waiting CONNECT without filler makes lvlipd
// leave the pair unread until the shim, having written its filler then, says how much with
// LVLIP_CONNECT_FILLER.
#define LVLIP_CONNECT_WAITS 0x1u
// The filler of a waiting CONNECT answered -EINPROGRESS, now written: `filler` bytes for
// lvlipd to read when the handshake completes (at once if it has). The answer is the
// connect's: -EINPROGRESS, 0 (connected, the filler taken) or its error.
#define LVLIP_CONNECT_FILLER 0x2u

struct lvlip_name_rep {
    int32_t result;
    uint32_t reserved;
    struct lvlip_addr addr;
};

struct lvlip_opt_req {
    struct lvlip_ref ref;
    int32_t level;
    int32_t name;
    uint32_t length;             // SETOPT: value bytes that follow; GETOPT: room the caller has
    uint32_t reserved;
};

struct lvlip_opt_rep {
    int32_t result;
    uint32_t length;             // value bytes that follow
};

enum lvlip_status_kind {
    LVLIP_STATUS_READ_END = 0,   // a read found end of stream: 0 for a clean end, or the error
    LVLIP_STATUS_WRITE_END = 1,  // a write found the stream closed: the error, or -EPIPE
};

// What a listening socket's descriptor carries, one per accepted connection, each with the
// connection's descriptor attached (SCM_RIGHTS).
#define LVLIP_ACCEPT_MAGIC 0x41434350u /* "PCCA" */
struct lvlip_accept_record {
    uint32_t magic;
    uint32_t size;               // sizeof(struct lvlip_accept_record)
    struct lvlip_ref ref;
    struct lvlip_addr local;
    struct lvlip_addr peer;
};

// A datagram socket's pair is SOCK_SEQPACKET: each message is this header and one datagram's
// payload. From the application: the destination (port 0: the connected peer). To the
// application: the source, or with LVLIP_DGRAM_ERROR an error (ICMP) and no payload.
// A message without the magic (a program that bypassed the shim with a raw syscall) is
// taken whole as a datagram to the connected peer.
#define LVLIP_DGRAM_ERROR 0x0001u
// From the application: `addr` is the destination even though `port` is 0 (ICMP sockets).
#define LVLIP_DGRAM_ADDRESSED 0x0002u
// With LVLIP_DGRAM_ERROR, to the application: an error queue record (IP_RECVERR), carrying
// struct lvlip_dgram_error and the quoted payload; it follows the plain error record.
#define LVLIP_DGRAM_ERRQUEUE 0x0004u
#define LVLIP_DGRAM_MAGIC 0x4d475244u /* "DRGM" */
struct lvlip_dgram_header {
    struct lvlip_addr addr;      // the destination (from the application), the source (to it)
    int32_t error;               // with LVLIP_DGRAM_ERROR: a positive errno
    uint32_t magic;              // LVLIP_DGRAM_MAGIC
    uint16_t flags;
    // To the application, what its receive control messages say (IP_PKTINFO, IP_RECVTTL,
    // IP_RECVTOS and their IPv6 forms): the kernel's index of the interface the datagram
    // came in on (the TAP's, or lo's), its TTL or hop limit, its TOS or traffic class, and
    // where it was sent (network byte order, IPv4 as ::ffff:a.b.c.d).
    uint16_t ifindex;
    uint8_t ttl;
    uint8_t tos;
    uint16_t reserved;
    uint8_t local[16];
};

// An error queue record (LVLIP_DGRAM_ERRQUEUE) carries, after its header, the ICMP or
// ICMPv6 error's details (what the shim returns from recvmsg(MSG_ERRQUEUE)) and then the
// start of the payload of the datagram in error, as far as the error message quoted it.
struct lvlip_dgram_error {
    uint8_t type;                // ICMP or ICMPv6 type and code
    uint8_t code;
    uint8_t origin;              // SO_EE_ORIGIN_ICMP (2) or SO_EE_ORIGIN_ICMP6 (3)
    uint8_t reserved;
    uint32_t info;               // the next-hop MTU of "fragmentation needed" or "packet too big", else 0
    struct lvlip_addr offender;  // who sent the error
    struct lvlip_addr destination;  // the datagram's destination and port
};

#endif
