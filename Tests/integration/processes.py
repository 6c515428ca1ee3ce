"""Programs the integration tests run: background processes in their own process groups
(killed by pid at teardown, logs in the test's workdir; the `procs` fixture in conftest.py),
bounded runs, Python scenario scripts, and the waits, checks and diagnostics around them."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness import bin_dir


def need(*tools):
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (scripts/install-deps installs it)")


def tail(path, limit=3000) -> str:
    try:
        return Path(path).read_bytes().decode(errors="replace")[-limit:]
    except OSError:
        return "(none)"


def stack_ss(daemon, listening=False, udp=False) -> str:
    """lvlipctl ss: the TCP sockets (and the UDP ones with udp), or only the listeners."""
    args = [bin_dir() / "lvlipctl", "ss", "--socket", daemon.socket]
    args += ["--listening"] if listening else ["--tcp", "--udp"] if udp else []
    try:
        result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "(lvlipctl ss timed out)"
    return result.stdout + result.stderr


def ss_rows(text) -> list:
    """(state, local, peer) of each socket line of `lvlipctl ss` (not its detail lines)."""
    rows = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if not line.startswith("\t") and len(fields) >= 5:
            rows.append((fields[0], fields[3], fields[4]))
    return rows


def assert_on_stack(daemon, active=0, passive=0) -> dict:
    """The connections went through lvlipd: a program whose shim did not load would use the
    kernel's own sockets without a word. Returns the daemon's counters."""
    stats = daemon.stats()
    assert stats["TcpActiveOpens"] >= active and stats["TcpPassiveOpens"] >= passive, \
        f"expected >= {active} active and >= {passive} passive opens on the stack: {stats}"
    return stats


class Processes:
    """Background processes of one test, each in its own process group; output in workdir."""

    def __init__(self, workdir: Path, daemon):
        self.workdir = workdir
        self.daemon = daemon
        self.started = []

    def start(self, name, args, stack=False, stdin=None, stdout=None, cwd=None):
        """Starts args (under lvlip when stack). stdin: None (/dev/null), a path, or
        subprocess.PIPE; stdout: a path, subprocess.PIPE, or None for workdir/NAME.out;
        stderr always goes to workdir/NAME.err."""
        err_path = self.workdir / f"{name}.err"
        out_path = None if stdout is subprocess.PIPE else Path(stdout or self.workdir / f"{name}.out")
        stdin_file = open(stdin, "rb") if isinstance(stdin, (str, Path)) else stdin
        stdout_file = subprocess.PIPE if out_path is None else open(out_path, "wb")
        stderr_file = open(err_path, "wb")
        try:
            proc = subprocess.Popen([str(a) for a in args], stdin=subprocess.DEVNULL if stdin is None else stdin_file,
                                    stdout=stdout_file, stderr=stderr_file,
                                    env=self.daemon.lvlip_env() if stack else None, cwd=cwd, start_new_session=True)
        finally:
            if isinstance(stdin, (str, Path)):
                stdin_file.close()
            if out_path is not None:
                stdout_file.close()
            stderr_file.close()
        proc.name = name
        proc.out_path = out_path
        proc.err_path = err_path
        self.started.append(proc)
        return proc

    def describe(self, proc) -> str:
        text = f"{proc.name} (pid {proc.pid}, {' '.join(map(str, proc.args))}) exit {proc.poll()}\n" \
               f"  stderr: {tail(proc.err_path)}"
        if proc.out_path is not None:
            text += f"\n  stdout: {tail(proc.out_path)}"
        return text

    def finish(self, proc, timeout, expect=0) -> int:
        """Waits for proc; fails if it outlives timeout or exits other than expect."""
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            pytest.fail(f"{proc.name} did not finish within {timeout} s: {self.describe(proc)}\n"
                        f"lvlipctl ss:\n{stack_ss(self.daemon, udp=True)}")
        if expect is not None:
            assert status == expect, self.describe(proc)
        return status

    def stop(self, proc, sig=signal.SIGTERM, timeout=10) -> int:
        """Sends sig to proc alone and waits (SIGKILL to its group after timeout)."""
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            pytest.fail(f"{proc.name} ignored {signal.Signals(sig).name} for {timeout} s: {self.describe(proc)}")

    @staticmethod
    def kill(proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we created for it (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def cleanup(self, failed):
        if failed:
            print(f"--- lvlipctl ss ---\n{stack_ss(self.daemon, udp=True)}")
            for proc in self.started:
                print(f"--- {self.describe(proc)}")
        for proc in reversed(self.started):
            for pipe in (proc.stdin, proc.stdout):
                if pipe:
                    try:
                        pipe.close()
                    except OSError:
                        pass
            self.kill(proc)


def bounded(args, timeout, stack=None, stdin=None, text=True, cwd=None):
    """Runs args to completion (under lvlip with stack=daemon); the CompletedProcess."""
    stdin_file = open(stdin, "rb") if stdin is not None else subprocess.DEVNULL
    try:
        return subprocess.run([str(a) for a in args], capture_output=True, text=text, timeout=timeout,
                              env=stack.lvlip_env() if stack else None, cwd=cwd, stdin=stdin_file)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{' '.join(map(str, args))} did not finish within {timeout} s; "
                    f"stdout: {error.stdout!r} stderr: {error.stderr!r}"
                    + (f"\nlvlipctl ss:\n{stack_ss(stack, udp=True)}" if stack else ""))
    finally:
        if stdin is not None:
            stdin_file.close()


def ok(result, what=""):
    assert result.returncode == 0, \
        f"{what or ' '.join(map(str, result.args))} exited {result.returncode}\nstdout: {str(result.stdout)[-2000:]}\n" \
        f"stderr: {str(result.stderr)[-3000:]}"
    return result


def wait_until(predicate, timeout, what, proc=None, procs=None):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited: {procs.describe(proc) if procs else proc.returncode}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}"
                        + (f": {procs.describe(proc)}" if procs and proc else ""))
        time.sleep(0.05)


def run_script(script, *args, stack=None, timeout=30, stderr=False):
    """Runs a Python scenario as `python3 -c SCRIPT ARGS` (under lvlip with stack=daemon, else
    on the kernel alone); fails the test unless it exits 0 having printed a JSON object or
    list. Returns the last one it printed, and with stderr=True its stderr too."""
    where = "under lvlip" if stack else "on the kernel"
    try:
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *[str(a) for a in args]],
                                env=stack.lvlip_env() if stack else None, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"script {where} did not finish within {timeout} s; stdout: {error.stdout!r} "
                    f"stderr: {error.stderr!r}")
    assert result.returncode == 0, f"script {where} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    lines = [line for line in result.stdout.splitlines() if line.startswith(("{", "["))]
    assert lines, f"no JSON output {where}:\n{result.stdout}\n{result.stderr}"
    out = json.loads(lines[-1])
    return (out, result.stderr) if stderr else out
