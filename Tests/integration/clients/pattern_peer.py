"""The stack's end of test_tcp.py's transfers: a program run under lvlip, as users run theirs,
that moves the seeded pattern stream (../pattern.py, docs/testing.md) and checks it byte for
byte.

    pattern_peer.py echo PORT                      echo every connection until killed
    pattern_peer.py sink PORT                      read "seed, stream", answer the verdict
    pattern_peer.py source PORT                    read "seed, length", send that much
    pattern_peer.py upload IP PORT BYTES SEED      send "seed, stream", half-close, read the verdict
    pattern_peer.py download IP PORT BYTES SEED    send "seed, length", check the stream

Servers listen on 0.0.0.0:PORT and print "listening PORT" once they do; sink and source serve
one connection and exit. Every finished connection prints one line

    result status=OK|ERROR|FAILED|MISMATCH DETAIL

where an ERROR names the failed call and its errno ("connect: ECONNREFUSED (errno 111)").
The exit status is 0 only for OK."""

import errno
import resource
import selectors
import socket
import struct
import sys
from pathlib import Path

# pattern.py sits beside the tests, one directory up; this file runs as a script, not a module.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pattern import receive_pattern, recv_exactly, send_pattern  # noqa: E402


def say(text):
    print(text, flush=True)


def result(status, detail):
    say(f"result status={status} {detail}")
    return 0 if status == "OK" else 1


def error_text(call, error):
    name = errno.errorcode.get(error.errno, str(error.errno))
    return f"{call}: {name} (errno {error.errno})"


def listen(port, backlog=1024):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(backlog)
    say(f"listening {port}")
    return listener


def accept_one(port):
    with listen(port) as listener:
        conn, _ = listener.accept()
    return conn


def sink(port):
    with accept_one(port) as conn:
        try:
            seed = struct.unpack("<Q", recv_exactly(conn, 8))[0]
            received, mismatch, digest = receive_pattern(conn, seed)
            verdict = f"OK {received}" if mismatch is None else f"MISMATCH {mismatch}"
            conn.sendall((verdict + "\n").encode())
        except OSError as error:
            return result("ERROR", error_text("receive", error))
    return result("OK" if mismatch is None else "MISMATCH", f"received {received} bytes sha256 {digest}")


def source(port):
    with accept_one(port) as conn:
        try:
            seed, total = struct.unpack("<QQ", recv_exactly(conn, 16))
            digest = send_pattern(conn, seed, total)
        except OSError as error:
            return result("ERROR", error_text("send", error))
    return result("OK", f"sent {total} bytes sha256 {digest}")


def connect(address, port):
    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        conn.connect((address, port))
    except OSError:
        conn.close()
        raise
    return conn


def upload(address, port, total, seed):
    try:
        conn = connect(address, port)
    except OSError as error:
        return result("ERROR", error_text("connect", error))
    with conn:
        try:
            conn.sendall(struct.pack("<Q", seed))
            digest = send_pattern(conn, seed, total)
            conn.shutdown(socket.SHUT_WR)
            verdict = b""
            while block := conn.recv(100):
                verdict += block
        except OSError as error:
            return result("ERROR", error_text("transfer", error))
    verdict = verdict.decode(errors="replace").strip()
    status = "OK" if verdict == f"OK {total}" else "FAILED"
    return result(status, f"sent {total} bytes sha256 {digest}; server says '{verdict}'")


def download(address, port, total, seed):
    try:
        conn = connect(address, port)
    except OSError as error:
        return result("ERROR", error_text("connect", error))
    with conn:
        try:
            conn.sendall(struct.pack("<QQ", seed, total))
            received, mismatch, digest = receive_pattern(conn, seed)
        except OSError as error:
            return result("ERROR", error_text("transfer", error))
    status = "OK" if received == total and mismatch is None else "FAILED"
    where = "" if mismatch is None else f", mismatch at {mismatch}"
    return result(status, f"received {received} of {total} bytes sha256 {digest}{where}")


class Echo:
    """Echoes on every connection at once, on one epoll set (through the shim's epoll); reads
    only what it has sent back (backpressure) and half-closes after the peer does."""

    def __init__(self, port):
        # Room for a thousand connections at once, within the hard limit.
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        self.listener = listen(port)
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.unsent = {}
        self.echoed = {}
        self.peer_closed = set()

    def serve(self):
        while True:
            for key, events in self.selector.select():
                if key.fileobj is self.listener:
                    self.accept()
                else:
                    self.serve_one(key.fileobj, events)

    def accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            self.unsent[conn] = b""
            self.echoed[conn] = 0
            self.selector.register(conn, selectors.EVENT_READ)

    def serve_one(self, conn, events):
        try:
            if events & selectors.EVENT_READ:
                data = conn.recv(65536)
                if data:
                    self.unsent[conn] += data
                else:
                    self.peer_closed.add(conn)
            self.flush(conn)
        except OSError as error:
            self.finish(conn, "ERROR", error_text("echo", error))

    def flush(self, conn):
        unsent = self.unsent[conn]
        if unsent:
            try:
                sent = conn.send(unsent)
            except BlockingIOError:
                sent = 0
            self.echoed[conn] += sent
            unsent = self.unsent[conn] = unsent[sent:]
        if unsent:
            self.selector.modify(conn, selectors.EVENT_WRITE)
        elif conn in self.peer_closed:
            conn.shutdown(socket.SHUT_WR)
            self.finish(conn, "OK", f"echoed {self.echoed[conn]} bytes")
        else:
            self.selector.modify(conn, selectors.EVENT_READ)

    def finish(self, conn, status, detail):
        result(status, detail)
        self.selector.unregister(conn)
        conn.close()
        del self.unsent[conn], self.echoed[conn]
        self.peer_closed.discard(conn)


def main(argv):
    role, args = argv[1], argv[2:]
    if role == "echo":
        Echo(int(args[0])).serve()
    servers = {"sink": sink, "source": source}
    clients = {"upload": upload, "download": download}
    if role in servers and len(args) == 1:
        return servers[role](int(args[0]))
    if role in clients and len(args) == 4:
        return clients[role](args[0], int(args[1]), int(args[2]), int(args[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
