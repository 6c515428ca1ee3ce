"""Phase 4: 10,000 connections opened at once, held idle, then one echo each; lvlipd's RSS
before, while idle and after the echoes."""

import json
import subprocess
import threading
import time

from .loadgen import loadgen_client, start_echo_servers
from .settings import ECHO_PORT, ECHO_PORTS, KERNEL_TAP_IP, NOFILE, VETH_PEER_IP


def concurrent(bed, stack):
    """Opens the connections, measures lvlipd's RSS while they are idle and after the echoes,
    then lets the client close them all."""
    count = bed.cfg["concurrent"]
    target = KERNEL_TAP_IP if stack == "lvlip" else VETH_PEER_IP
    command = ["prlimit", f"--nofile={NOFILE}:{NOFILE}", bed.loadgen, "concurrent", target, ECHO_PORT,
               count, ECHO_PORTS]
    rss = {}
    if stack == "lvlip":
        rss["before"] = bed.daemon_rss_kb()
    proc = bed.start(f"loadgen concurrent {stack}", command, stack=stack == "lvlip", stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = []
    done = threading.Event()
    stderr_lines = []

    def read_stderr():
        for line in proc.stderr:
            stderr_lines.append(line.rstrip())
            lines.append(line.rstrip())
        done.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()

    def wait_for(word, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(line == f"loadgen: {word}" for line in lines):
                return True
            if done.is_set() or proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def go():
        try:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        except OSError:
            pass

    bed.progress.set(f"4/7 concurrency: {stack}, opening {count} connections")
    if wait_for("idle", 90):
        time.sleep(1)  # let the last handshakes' ACKs and the pairs settle
        if stack == "lvlip" and bed.daemon_alive("concurrency"):
            rss["idle"] = bed.daemon_rss_kb()
        bed.progress.set(f"4/7 concurrency: {stack}, one echo on each connection")
        go()
        if wait_for("echoed", 90):
            if stack == "lvlip" and bed.daemon_alive("concurrency"):
                rss["echoed"] = bed.daemon_rss_kb()
    go()
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        bed.stop(proc)
        out, _ = proc.communicate()
    bed.forget(proc)
    reader.join(timeout=5)
    try:
        result = json.loads(out)
    except ValueError:
        bed.problem(f"loadgen concurrent ({stack}): exit {proc.returncode}, no complete result; "
                    f"stdout: {out.strip()[-300:]}; stderr: {' | '.join(stderr_lines[-3:])}")
        result = None
    if result is not None:
        result["rss_kb"] = rss
    return result


def run(bed):
    bed.start_daemon()
    start_echo_servers(bed)
    bed.warm_up()
    # One connection through the daemon first, so "before" is a daemon that has served one.
    loadgen_client(bed, "lvlip", "pingpong", 0.2, timeout=30)
    time.sleep(0.5)
    bed.results["conc"] = {}
    for stack in ("kernel", "lvlip"):
        bed.results["conc"][stack] = concurrent(bed, stack)
    bed.daemon_alive("concurrency")
    bed.stop_all()
    bed.stop_daemon()
