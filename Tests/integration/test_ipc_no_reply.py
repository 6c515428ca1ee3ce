"""LVLIP_FLAG_NO_REPLY on the wire (docs/ipc.md): a SETOPT so flagged is applied and gets no
reply; the flag on any other message closes that client with a logged reason."""

import os
import socket
import struct
import time

import ipc_wire as W

HEADER_SIZE = W.size("lvlip_msg_header")
NO_REPLY = W.const("LVLIP_FLAG_NO_REPLY")


def connection(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    hello = W.pack("lvlip_hello", W.const("LVLIP_IPC_MAGIC"), W.const("LVLIP_IPC_VERSION"), 0, os.getpid())
    s.sendall(W.header(len(hello), W.const("LVLIP_MSG_HELLO"), 0, 1) + hello)
    assert message(s)[0]["type"] == W.const("LVLIP_MSG_HELLO_REPLY")
    return s


def message(s):
    """The next message: (header fields, body); (None, b"") at end of stream."""
    data = b""
    while len(data) < HEADER_SIZE:
        block = s.recv(HEADER_SIZE - len(data))
        if not block:
            return None, b""
        data += block
    head = W.unpack_from("lvlip_msg_header", data)
    body = b""
    while len(body) < head["length"]:
        block = s.recv(head["length"] - len(body))
        assert block, "end of stream inside a message"
        body += block
    return head, body


def tcp_socket(s):
    """SOCKET for an AF_INET stream socket; returns (ref fields, the application's end)."""
    app, daemon_end = socket.socketpair()
    body = W.pack("lvlip_socket_req", family=socket.AF_INET, type=socket.SOCK_STREAM, protocol=0)
    socket.send_fds(s, [W.header(len(body), W.const("LVLIP_MSG_SOCKET"), W.const("LVLIP_FLAG_FD"), 10) + body],
                    [daemon_end.fileno()])
    daemon_end.close()
    head, reply = message(s)
    assert head["type"] == W.const("LVLIP_MSG_SOCKET") + 1 and head["tag"] == 10
    rep = W.unpack_from("lvlip_socket_rep", reply)
    assert rep["result"] == 0, rep
    return (rep["ref.index"], rep["ref.generation"], rep["ref.token"]), app


def option_request(ref, name, length):
    return W.pack("lvlip_opt_req", *ref, socket.IPPROTO_TCP, name, length, 0)


def test_setopt_without_reply_is_applied_and_answered_by_nothing(daemon):
    s = connection(daemon.socket)
    ref, app = tcp_socket(s)
    setopt = option_request(ref, socket.TCP_NODELAY, 4) + struct.pack("<i", 1)
    s.sendall(W.header(len(setopt), W.const("LVLIP_MSG_SETOPT"), NO_REPLY, 11) + setopt)
    getopt = option_request(ref, socket.TCP_NODELAY, 4)
    s.sendall(W.header(len(getopt), W.const("LVLIP_MSG_GETOPT"), 0, 12) + getopt)
    # The next message is GETOPT's reply (SETOPT sent none), and it sees the option set.
    head, body = message(s)
    assert (head["type"], head["tag"]) == (W.const("LVLIP_MSG_GETOPT") + 1, 12), head
    rep = W.unpack_from("lvlip_opt_rep", body)
    assert rep["result"] == 0 and rep["length"] == 4
    assert struct.unpack_from("<i", body, W.size("lvlip_opt_rep"))[0] == 1
    # The same request with a reply still gets one.
    s.sendall(W.header(len(setopt), W.const("LVLIP_MSG_SETOPT"), 0, 13) + setopt)
    head, body = message(s)
    assert (head["type"], head["tag"]) == (W.const("LVLIP_MSG_SETOPT") + 1, 13), head
    s.close()
    app.close()


def test_no_reply_flag_on_another_message_closes_the_client(daemon):
    s = connection(daemon.socket)
    ref, app = tcp_socket(s)
    getopt = option_request(ref, socket.TCP_NODELAY, 4)
    s.sendall(W.header(len(getopt), W.const("LVLIP_MSG_GETOPT"), NO_REPLY, 12) + getopt)
    head, _ = message(s)
    assert head is None, f"the client should have been closed, got {head}"
    # lvlipd logs the reason just after closing the connection.
    deadline = time.monotonic() + 5
    while "flagged to need no reply (SETOPT only)" not in daemon.stderr():
        assert time.monotonic() < deadline, daemon.stderr()
        time.sleep(0.01)
    s.close()
    app.close()
    # The daemon goes on serving others.
    other = connection(daemon.socket)
    other.close()
