"""The namespaces, links and processes of a run: the private /run and the `ip netns` peer
across a veth pair, lvlipd on tap0 (a fresh one per phase), every client and server started by
PID and stopped at the end, and the commands recorded for the report."""

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .host import git_revision, loadavg
from .launch import fail
from .progress import Progress
from .settings import (KERNEL_TAP_IP, KERNEL_TAP_IP6, NOFILE, PEER_NS, REPO, STACK_IP, STACK_IP6, VETH_LOCAL_IP,
                       VETH_LOCAL_IP6, VETH_PEER_IP, VETH_PEER_IP6, settings)


def interfaces():
    # /proc/net follows this process's namespace (sysfs would show the host's).
    with open("/proc/net/dev") as f:
        return [line.split(":", 1)[0].strip() for line in f.readlines()[2:]]


def sh(*args, timeout=30, check=True):
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"`{' '.join(map(str, args))}` failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


class Testbed:
    """The run's namespaces, links, lvlipd and processes, and what the phases found: their
    results, the commands they ran and the problems they saw."""

    def __init__(self, args):
        self.args = args
        self.cfg = settings(args)
        self.bin = Path(os.environ["LVLIP_BIN"])
        self.workdir = Path(tempfile.mkdtemp(prefix="lvlip-throughput-"))
        self.socket = self.workdir / "lvlipd.sock"
        self.loadgen = self.workdir / "loadgen"
        self.progress = Progress()
        self.daemon = None
        self.daemon_log = None
        self.daemon_starts = 0
        self.procs = []  # everything started and still to stop: (name, Popen)
        self.commands = []
        self.problems = []
        self.by_mode = {}  # mode name -> what the phases found in that mode
        self.results = {}  # the current mode's entry of by_mode
        self.mode, self.cpu = None, None
        self.peer_made = False
        self.build_description = str(self.bin)
        self.load_at_start = loadavg()
        self.run_bin = self.bin
        if NOFILE < self.cfg["concurrent"] + 100:
            self.problem(f"RLIMIT_NOFILE hard limit {NOFILE} is below {self.cfg['concurrent']} connections")

    # MARK: Setup and teardown

    def setup(self):
        if interfaces() != ["lo"]:
            fail(f"refusing to run outside a fresh network namespace (found {interfaces()})")
        self.progress.set("setup: namespaces, veth pair, loadgen")
        sh("ip", "link", "set", "lo", "up")
        # Private to this run's mount and network namespaces: `ip netns` keeps its names under
        # /run/netns, so give it a fresh tmpfs instead of the host's /run.
        sh("mount", "-t", "tmpfs", "-o", "mode=0755", "lvlip-bench-run", "/run")
        Path("/proc/sys/net/ipv6/conf/default/disable_ipv6").write_text("1")
        self.tune_namespace()
        sh("ip", "netns", "add", PEER_NS)
        self.peer_made = True
        sh("ip", "-n", PEER_NS, "link", "set", "lo", "up")
        self.in_peer(["sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6"])
        self.make_veth()
        for path, value in self.sysctls():
            self.in_peer(["sh", "-c", f"echo '{value}' > {path}"])
        self.snapshot_binaries()
        source = REPO / "scripts" / "bench" / "loadgen.c"
        sh("cc", "-O2", "-Wall", "-o", self.loadgen, source, timeout=120)

    @staticmethod
    def make_veth():
        sh("ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", PEER_NS)
        sh("ip", "addr", "add", f"{VETH_LOCAL_IP}/24", "dev", "veth0")
        sh("ip", "link", "set", "veth0", "up")
        sh("ip", "-n", PEER_NS, "addr", "add", f"{VETH_PEER_IP}/24", "dev", "veth1")
        sh("ip", "-n", PEER_NS, "link", "set", "veth1", "up")

    def one_segment_per_frame(self):
        """For the loss phases: a lost frame is one segment on both paths. The kernel sender
        builds one-segment skbs (the netdev hooks run before software GSO), and the veth
        receiver does no GRO. tap0 goes with its lvlipd; restore_links undoes the rest."""
        sh("ip", "link", "set", "tap0", "gso_max_segs", "1")
        self.record(["ip", "link", "set", "tap0", "gso_max_segs", "1"])
        for command in (["ip", "link", "set", "veth0", "gso_max_segs", "1"],
                        ["ethtool", "-K", "veth0", "gro", "off", "tso", "off", "gso", "off"]):
            sh(*command)
            self.record(command)
        for command in (["ip", "link", "set", "veth1", "gso_max_segs", "1"],
                        ["ethtool", "-K", "veth1", "gro", "off", "tso", "off", "gso", "off"]):
            self.in_peer(command)
            self.record(command, "peer")

    def restore_links(self):
        """A fresh veth pair with default offloads, so that the phases after a loss phase (the
        next mode's) measure the kernel as users run it."""
        for link in ("veth0", "lvlipsink0"):
            if link in interfaces():
                sh("ip", "link", "del", link)
        self.make_veth()

    def use_mode(self, name, cpu):
        """The phases from now on pin to `cpu` (None: not pinned) and file their figures under
        `name`."""
        self.mode, self.cpu = name, cpu
        self.results = self.by_mode.setdefault(name, {})
        self.progress.prefix = f"{name}: "

    def snapshot_binaries(self):
        """Copies lvlipd and the shim into the run's temp dir, so a rebuild during the run
        (scripts/build in another shell) cannot mix two builds in one set of figures."""
        run_bin = self.workdir / "bin"
        run_bin.mkdir()
        described = []
        for name in ("lvlipd", "liblvlip.so", "lvlipctl"):
            source = self.bin / name
            shutil.copy2(source, run_bin / name)
            digest = hashlib.sha256((run_bin / name).read_bytes()).hexdigest()[:12]
            built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(source.stat().st_mtime))
            described.append(f"{name} built {built}, sha256 {digest}")
        if REPO.resolve() in self.bin.resolve().parents:
            origin = f"checkout at git {git_revision()} when the run began"
        else:
            origin = "$LVLIP_BIN, outside this checkout"
        self.build_description = f"{self.bin} ({'; '.join(described)}); {origin}"
        self.run_bin = run_bin

    @staticmethod
    def sysctls():
        # Per network namespace: room for 10,000 connections arriving at once; and no TCP
        # metrics cache, so that a download does not start from what an earlier run (another
        # phase, or the other loss rate) left cached for the same destination (ssthresh, RTT,
        # reordering): measured, the first lossy download after the other phases took 2.0-2.8 s
        # where the next ones took 1.6-1.9 s.
        return [("/proc/sys/net/core/somaxconn", "65535"),
                ("/proc/sys/net/ipv4/tcp_max_syn_backlog", "65535"),
                ("/proc/sys/net/ipv4/tcp_no_metrics_save", "1")]

    def tune_namespace(self):
        for path, value in self.sysctls():
            Path(path).write_text(value)

    def in_peer(self, command, timeout=30):
        return sh("ip", "netns", "exec", PEER_NS, *command, timeout=timeout)

    def teardown(self):
        for name, proc in reversed(self.procs):
            self.stop(proc)
        self.procs = []
        self.stop_daemon()
        for link in ("veth0", "lvlipsink0"):
            if link in interfaces():
                subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=10)
        if self.peer_made:
            subprocess.run(["ip", "netns", "del", PEER_NS], capture_output=True, timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.progress.close()

    def pin(self):
        return [] if self.cpu is None else ["taskset", "-c", self.cpu]

    def record(self, command, where=""):
        text = " ".join(str(c) for c in command)
        text = text.replace(str(self.workdir / "bin"), str(self.bin)).replace(str(self.workdir), "$TMP")
        text = text.replace(str(REPO) + "/", "")
        if where:
            text = f"{where}: {text}"
        if text not in self.commands:
            self.commands.append(text)

    def start(self, name, command, peer=False, stack=False, stdin=None, stdout=None, stderr=None):
        """Starts a process (in the peer namespace, or under lvlip) and remembers it by PID."""
        full = self.pin() + [str(c) for c in command]
        if stack:
            full = self.pin() + [str(REPO / "scripts" / "lvlip")] + [str(c) for c in command]
        if peer:
            full = ["ip", "netns", "exec", PEER_NS] + full
        self.record(full if not peer else full[4:], "peer" if peer else "")
        env = {**os.environ, "LVLIP_SOCKET": str(self.socket), "LVLIP_SHIM": str(self.run_bin / "liblvlip.so")}
        proc = subprocess.Popen(full, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                stdout=stdout if stdout is not None else subprocess.DEVNULL,
                                stderr=stderr if stderr is not None else subprocess.DEVNULL,
                                env=env, text=True)
        self.procs.append((name, proc))
        return proc

    def run(self, name, command, timeout, peer=False, stack=False):
        """Runs a client to completion within `timeout`; returns (returncode, stdout, stderr)."""
        proc = self.start(name, command, peer=peer, stack=stack, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            out, err = proc.communicate()
            self.forget(proc)
            return None, out, (err or "") + f"\n(killed after {timeout} s)"
        self.forget(proc)
        return proc.returncode, out, err

    def forget(self, proc):
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    @staticmethod
    def stop(proc, grace=5):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def stop_all(self):
        for name, proc in reversed(self.procs):
            self.stop(proc)
        self.procs = []

    def start_daemon(self, offload=True, ipv6=False):
        """A fresh lvlipd for every phase: one phase's TIME-WAITs and allocations do not leak
        into the next one's figures. Without offload (`--no-offload`) it writes one segment
        per frame, as the kernel sender of the loss phases does."""
        self.stop_daemon()
        deadline = time.monotonic() + 10
        while "tap0" in interfaces():
            if time.monotonic() > deadline:
                raise RuntimeError("tap0 did not go away after lvlipd stopped")
            time.sleep(0.02)
        self.daemon_starts += 1
        log_path = self.workdir / f"lvlipd-{self.daemon_starts}.stderr"
        self.daemon_log = open(log_path, "w")
        command = self.pin() + [str(self.run_bin / "lvlipd"), "--tap", "tap0", "--addr", f"{STACK_IP}/24",
                                "--socket", str(self.socket), "--log-level", "warning"]
        if not offload:
            command.append("--no-offload")
        if ipv6:
            command += ["--addr", f"{STACK_IP6}/64"]
        self.record(command)
        self.daemon = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self.daemon_log,
                                       stderr=self.daemon_log)
        deadline = time.monotonic() + 10
        while not (self.socket.exists() and "tap0" in interfaces()):
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"lvlipd did not start:\n{log_path.read_text()}")
            time.sleep(0.02)
        sh("ip", "addr", "add", f"{KERNEL_TAP_IP}/24", "dev", "tap0")
        if ipv6:
            # IPv6 is off by default in these namespaces (setup): on for tap0 alone.
            Path("/proc/sys/net/ipv6/conf/tap0/disable_ipv6").write_text("0")
            sh("ip", "-6", "addr", "add", f"{KERNEL_TAP_IP6}/64", "dev", "tap0", "nodad")
        self.daemon_log_path = log_path

    def stop_daemon(self):
        if not self.daemon:
            return
        status = self.daemon.poll()
        if status is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                status = self.daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(timeout=5)
                status = "hung on SIGTERM (killed)"
        if status != 0:
            self.problem(f"lvlipd (start {self.daemon_starts}) exited with {status}")
        if self.daemon_log:
            self.daemon_log.close()
            log = self.daemon_log_path.read_text().strip()
            if log:
                lines = log.splitlines()
                self.problem(f"lvlipd (start {self.daemon_starts}) logged {len(lines)} line(s), last: "
                             + " | ".join(lines[-3:]))
        self.daemon = None
        self.daemon_log = None

    def daemon_alive(self, during):
        if self.daemon.poll() is not None:
            self.problem(f"lvlipd died during {during} (status {self.daemon.returncode})")
            return False
        return True

    def problem(self, text):
        if self.mode and len(self.args.modes) > 1:
            text = f"{self.mode}: {text}"
        if text not in self.problems:
            self.problems.append(text)

    def daemon_rss_kb(self):
        with open(f"/proc/{self.daemon.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def daemon_cpu_seconds(self):
        with open(f"/proc/{self.daemon.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # After the command: state is field 3, utime 14 and stime 15 (proc(5)).
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tcp_counters(self, stack):
        """TcpRetransSegs and TcpOutSegs of the sender: lvlipd's (`lvlipctl stat`) or this
        namespace's kernel (`nstat`), where the kernel's clients run."""
        if stack == "lvlip":
            command = [self.run_bin / "lvlipctl", "stat", "--socket", self.socket, "--zeros", "Tcp"]
        else:
            command = ["nstat", "-asz", "TcpRetransSegs", "TcpOutSegs"]
        self.record(command)
        counters = {}
        for line in sh(*command).splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                counters[fields[0]] = int(fields[1])
        return {key: counters.get(key, 0) for key in ("TcpRetransSegs", "TcpOutSegs")}

    def enable_veth_ipv6(self):
        """IPv6 on the veth pair, for the bulk6 phase (restore_links makes a fresh pair)."""
        Path("/proc/sys/net/ipv6/conf/veth0/disable_ipv6").write_text("0")
        sh("ip", "-6", "addr", "add", f"{VETH_LOCAL_IP6}/64", "dev", "veth0", "nodad")
        self.in_peer(["sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/veth1/disable_ipv6"])
        self.in_peer(["ip", "-6", "addr", "add", f"{VETH_PEER_IP6}/64", "dev", "veth1", "nodad"])

    def wait_listening(self, port, peer=False, timeout=10, ipv6=False):
        """Until a kernel listener on `port` shows in /proc/net/tcp (tcp6) of the namespace."""
        needle = f":{port:04X} "
        table = "/proc/net/tcp6" if ipv6 else "/proc/net/tcp"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = (self.in_peer(["cat", table]) if peer else Path(table).read_text())
            if any(needle in line and line.split()[3] == "0A" for line in text.splitlines()[1:]):
                return
            time.sleep(0.05)
        raise RuntimeError(f"no listener on port {port} {'in the peer' if peer else ''}")

    def warm_up(self, ipv6=False):
        """ARP (NDP) both ways and the daemon's first connection, before anything is measured.
        Over IPv6, lvlipd's address answers once its duplicate address detection is over:
        pinged until it does (at most 10 s)."""
        if ipv6:
            deadline = time.monotonic() + 10
            ping = ["ping", "-6", "-c", "1", "-W", "1", STACK_IP6]
            while subprocess.run(ping, capture_output=True, timeout=5).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"lvlipd's {STACK_IP6} never answered ping -6")
            sh("ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", VETH_PEER_IP6, check=False)
            return
        sh("ping", "-c", "2", "-i", "0.2", "-W", "1", STACK_IP, check=False)
        sh("ping", "-c", "2", "-i", "0.2", "-W", "1", VETH_PEER_IP, check=False)
