"""Runs socket option cases on sockets of one kind and prints the results as one JSON line.

    python3 sockopt_probe.py KIND CASES.json [HOST PORT]

KIND is tcp, tcp6, udp6, listen, connected, connected6, accepted, udp or udpconn; `connected`,
`connected6` (to an IPv6 HOST) and `udpconn` connect to HOST:PORT, `accepted` listens on HOST:PORT (with the INHERITED values set) and prints
"READY" before accepting one connection per case. CASES is a list of {"level", "name", "steps"}; each case gets a fresh
socket of the kind and its steps run on it in order: ["get", buflen] or ["set", hexbytes],
optionally followed by another level and name to use instead of the case's.
A step's result is ["ok", hexbytes] for get, ["ok"] for set, or ["err", errno name].
Run the same file under lvlip and without it: the kernel and lvlip must print the same."""

import ctypes
import errno
import json
import socket
import sys

# libc's own calls (the shim's, when preloaded), so that optlen is exactly what the case says,
# 0 included, and the length the call reports is seen.
libc = ctypes.CDLL(None, use_errno=True)


INHERITED = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.SOL_SOCKET, socket.SO_PRIORITY, 3),
    (socket.SOL_SOCKET, socket.SO_RCVLOWAT, 10),
    (socket.SOL_SOCKET, socket.SO_SNDBUF, 100000),
    (socket.IPPROTO_IP, socket.IP_TOS, 0x20),
    (socket.IPPROTO_IP, socket.IP_TTL, 33),
    (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 100),
    (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 5000),
    (socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno"),
    (socket.SOL_SOCKET, socket.SO_MARK, 7),
    (socket.SOL_SOCKET, 29, 1),  # SO_TIMESTAMP
    (socket.IPPROTO_IP, socket.IP_RECVTOS, 1),
    (socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0),
    (socket.IPPROTO_TCP, socket.TCP_SYNCNT, 3),
    (socket.IPPROTO_TCP, socket.TCP_LINGER2, 30),
    (socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 1000),
    (socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 5),
    (socket.IPPROTO_TCP, 36, 1),  # TCP_INQ
]


def make(kind, host, port, listener):
    if kind == "tcp":
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if kind == "tcp6":
        return socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    if kind == "udp":
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if kind == "udpconn":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((host, port))
        return s
    if kind == "listen":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("0.0.0.0", 0))
        s.listen(8)
        return s
    if kind == "connected":
        return socket.create_connection((host, port), timeout=10)
    if kind == "udp6":
        return socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    if kind == "connected6":
        return socket.create_connection((host, port), timeout=10)
    if kind == "accepted":
        conn, _ = listener.accept()
        return conn
    raise SystemExit(f"unknown kind {kind}")


def run(s, level, name, op):
    if len(op) > 2:  # a step on another option of the same socket
        level, name = op[2], op[3]
    if op[0] == "get":
        buffer = ctypes.create_string_buffer(max(op[1], 1))
        length = ctypes.c_uint32(op[1])
        r = libc.getsockopt(s.fileno(), level, name, buffer, ctypes.byref(length))
        if r == 0:
            return ["ok", buffer.raw[:length.value].hex()]
    else:
        value = bytes.fromhex(op[1])
        r = libc.setsockopt(s.fileno(), level, name, ctypes.c_char_p(value) if value else None, len(value))
        if r == 0:
            return ["ok"]
    code = ctypes.get_errno()
    return ["err", errno.errorcode.get(code, str(code))]


def main():
    kind, path = sys.argv[1], sys.argv[2]
    host = sys.argv[3] if len(sys.argv) > 3 else None
    port = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    with open(path) as f:
        cases = json.load(f)
    listener = None
    if kind == "accepted":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Values an accepted socket inherits from its listener (the kernel clones it).
        for level, name, value in INHERITED:
            listener.setsockopt(level, name, value)
        listener.bind((host, port))
        listener.listen(len(cases) + 8)
        listener.settimeout(20)
        print("READY", flush=True)
    results = []
    for case in cases:
        s = make(kind, host, port, listener)
        results.append([run(s, case["level"], case["name"], op) for op in case["steps"]])
        s.close()
    print(json.dumps(results), flush=True)


main()
