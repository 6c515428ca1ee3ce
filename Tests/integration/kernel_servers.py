"""Kernel TCP servers for the tests that run programs under lvlip against kernel peers: a
listener whose accept loop runs in a thread and hands each connection on."""

import socket
import threading


class KernelServer:
    """A kernel TCP server on `host`:port. Each accepted connection goes to `handler(conn)` in
    a thread of its own and is closed after it (its result, or the exception it raised, lands
    in `results`), or with `keep` is only kept in `connections` until close()."""

    def __init__(self, port, handler=None, host="0.0.0.0", backlog=16, keep=False):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
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
        try:
            self.results.append(self.handler(conn))
        except Exception as error:  # recorded for the test to see
            self.results.append(error)
        finally:
            conn.close()

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
