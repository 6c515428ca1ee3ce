"""The PatternStream of Sources/Stack/Util/PatternStream.swift, in numpy: the little-endian
bytes of successive SplitMix64 outputs from a seed. Output i (from 0) depends only on
seed + (i + 1) * gamma, so blocks are generated vectorised at any offset.

Also the stream's transfer over a socket, the same on the kernel's side of a test and in the
pattern peer that runs on the stack (clients/pattern_peer.py)."""

import hashlib

import numpy as np

GAMMA = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)


def words(seed: int, first: int, count: int) -> np.ndarray:
    """SplitMix64 outputs first .. first + count - 1 for `seed`."""
    with np.errstate(over="ignore"):
        index = np.arange(first + 1, first + count + 1, dtype=np.uint64)
        z = np.uint64(seed) + index * GAMMA
        z = (z ^ (z >> np.uint64(30))) * M1
        z = (z ^ (z >> np.uint64(27))) * M2
        return z ^ (z >> np.uint64(31))


class Pattern:
    """Bytes of the stream, block by block."""

    def __init__(self, seed: int):
        self.seed = seed
        self.position = 0

    def read(self, n: int) -> bytes:
        start = self.position
        first_word = start // 8
        last_word = (start + n + 7) // 8
        block = words(self.seed, first_word, last_word - first_word).astype("<u8").tobytes()
        offset = start - first_word * 8
        self.position += n
        return block[offset:offset + n]

    def check(self, data: bytes) -> int | None:
        """Compares `data` with the next bytes; returns the stream offset of the first
        difference or None."""
        expected = self.read(len(data))
        if expected == data:
            return None
        a = np.frombuffer(expected, dtype=np.uint8)
        b = np.frombuffer(data, dtype=np.uint8)
        return self.position - len(data) + int(np.argmax(a != b))


CHUNK = 1 << 20


def send_pattern(sock, seed: int, total: int) -> str:
    """Sends the first `total` bytes of the stream; returns their sha256."""
    pattern = Pattern(seed)
    digest = hashlib.sha256()
    sent = 0
    while sent < total:
        block = pattern.read(min(CHUNK, total - sent))
        sock.sendall(block)
        digest.update(block)
        sent += len(block)
    return digest.hexdigest()


def receive_pattern(sock, seed: int) -> tuple[int, int | None, str]:
    """Reads to EOF, checking the stream; returns (bytes, first mismatch or None, sha256)."""
    pattern = Pattern(seed)
    digest = hashlib.sha256()
    received = 0
    mismatch = None
    while True:
        block = sock.recv(CHUNK)
        if not block:
            return received, mismatch, digest.hexdigest()
        digest.update(block)
        if mismatch is None:
            mismatch = pattern.check(block)
        received += len(block)


def pattern_digest(seed: int, total: int) -> str:
    """The sha256 of the first `total` bytes of the stream."""
    pattern = Pattern(seed)
    digest = hashlib.sha256()
    left = total
    while left:
        block = pattern.read(min(CHUNK, left))
        digest.update(block)
        left -= len(block)
    return digest.hexdigest()


def recv_exactly(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        block = sock.recv(n - len(data))
        if not block:
            raise ConnectionError(f"EOF after {len(data)} of {n} header bytes")
        data += block
    return data
