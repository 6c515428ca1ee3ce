"""The PatternStream of Sources/Stack/Util/PatternStream.swift, in numpy: the little-endian
bytes of successive SplitMix64 outputs from a seed. Output i (from 0) depends only on
seed + (i + 1) * gamma, so blocks are generated vectorised at any offset."""

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
