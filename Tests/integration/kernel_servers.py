"""Kernel TCP servers for the tests that run programs under lvlip against kernel peers: a
listener whose accept loop runs in a thread and hands each connection on, and the handlers
the tests give it (echo, and the pattern sink and source of docs/testing.md)."""

import socket
import struct
import threading
import time

from pattern import receive_pattern, recv_exactly, send_pattern


class KernelServer:
    """A kernel TCP server on `host`:port. Each accepted connection goes to `handler(conn)` in
    a thread of its own and is closed after it (its result, or the exception it raised, lands
    in `results`), or with `keep` is only kept in `connections` until close(). Port 0 takes
    a free one (`port`); `timeout` bounds every blocking call on an accepted connection."""

    def __init__(self, port, handler=None, host="0.0.0.0", backlog=16, keep=False, timeout=None):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.timeout = timeout
        self.handler = handler
        self.keep = keep
        self.results = []
        self.connections = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.keep:
                self.connections.append(conn)
            else:
                threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        conn.settimeout(self.timeout)
        try:
            self.results.append(self.handler(conn))
        except Exception as error:  # recorded for the test to see
            self.results.append(error)
        finally:
            conn.close()

    def wait(self, count=1, timeout=130):
        """The results of the first `count` connections, once they are in; raises what a
        handler raised."""
        deadline = time.monotonic() + timeout
        while len(self.results) < count:
            assert time.monotonic() < deadline, f"kernel server: {len(self.results)} of {count} connections done"
            time.sleep(0.05)
        for outcome in self.results:
            if isinstance(outcome, Exception):
                raise outcome
        return self.results[:count]

    def close(self):
        # shutdown wakes the thread blocked in accept, which otherwise keeps the port bound.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)
        for conn in self.connections:
            conn.close()


def echo(conn):
    """Echoes until the peer's FIN, then sends its own; returns the bytes echoed."""
    total = 0
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return total
        total += len(data)
        conn.sendall(data)


def pattern_sink(conn):
    """Reads "seed, stream" to EOF and answers "OK <bytes>" or "MISMATCH <offset>"; returns
    (bytes, first mismatch or None, sha256)."""
    seed = struct.unpack("<Q", recv_exactly(conn, 8))[0]
    received, mismatch, digest = receive_pattern(conn, seed)
    verdict = f"OK {received}" if mismatch is None else f"MISMATCH {mismatch}"
    conn.sendall((verdict + "\n").encode())
    return received, mismatch, digest


def pattern_source(conn):
    """Reads "seed, length" and sends that much of the stream; returns its sha256."""
    seed, total = struct.unpack("<QQ", recv_exactly(conn, 16))
    return send_pattern(conn, seed, total)
