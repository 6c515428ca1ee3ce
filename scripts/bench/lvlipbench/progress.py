"""The progress line on stderr."""

import shutil
import sys
import threading
import time


class Progress:
    """One line on stderr: elapsed time and the current step (redrawn on a terminal, one line
    per step otherwise)."""

    def __init__(self):
        self.start = time.monotonic()
        self.step = "starting"
        self.prefix = ""  # the mode the phases run in now
        self.tty = sys.stderr.isatty()
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def elapsed(self):
        return time.monotonic() - self.start

    def line(self):
        e = int(self.elapsed())
        return f"[throughput {e // 60}:{e % 60:02d}] {self.prefix}{self.step}"

    def set(self, step):
        with self.lock:
            self.step = step
            if not self.tty:
                print(self.line(), file=sys.stderr, flush=True)
            else:
                self.draw()

    def draw(self):
        text = self.line()[:max(20, shutil.get_terminal_size((100, 20)).columns - 1)]
        sys.stderr.write("\r\033[K" + text)
        sys.stderr.flush()

    def loop(self):
        while not self.stop_event.wait(0.5):
            if self.tty:
                with self.lock:
                    self.draw()

    def close(self):
        self.stop_event.set()
        if self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
