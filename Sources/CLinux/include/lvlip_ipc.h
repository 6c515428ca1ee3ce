// The lvlip IPC wire format, shared by the Swift daemon and the C shim so they cannot drift.
// Documented in docs/ipc.md. All integers are little-endian (the peers share one host).
#ifndef LVLIP_IPC_H
#define LVLIP_IPC_H

#include <stdint.h>

#define LVLIP_IPC_MAGIC 0x504c564cu /* "LVLP" read as little-endian bytes */
#define LVLIP_IPC_VERSION 1u
// Upper bound on a message body: anything larger is a protocol violation.
#define LVLIP_IPC_MAX_BODY (256u * 1024u)
#define LVLIP_IPC_HEADER_SIZE 12u

// Every message: a 12-byte header followed by `length` bytes of body.
//   uint32 length   body bytes after the header
//   uint16 type     enum lvlip_msg_type
//   uint16 flags    must be 0 in version 1
//   uint32 tag      chosen by the client, echoed in the reply
enum lvlip_msg_type {
    LVLIP_MSG_HELLO = 1,         // client -> daemon: uint32 magic, uint16 version, uint16 0, int32 pid
    LVLIP_MSG_HELLO_REPLY = 2,   // daemon -> client: uint32 magic, uint16 version, uint16 0, int32 daemon pid
    LVLIP_MSG_ERROR = 3,         // daemon -> client: int32 errno, UTF-8 reason
    LVLIP_MSG_STATS = 16,        // client -> daemon: empty body
    LVLIP_MSG_STATS_REPLY = 17,  // daemon -> client: UTF-8 lines "Name value\n"
    LVLIP_MSG_SOCKETS = 18,      // client -> daemon: empty body
    LVLIP_MSG_SOCKETS_REPLY = 19,  // daemon -> client: UTF-8 lines, one per socket, "key=value" fields
};

#endif
