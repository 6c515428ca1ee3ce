"""Real programs over lvlip: unchanged binaries run with the LD_PRELOAD shim (their TCP
sockets served by lvlipd) against kernel peers on the other side of tap0, byte for byte.

"stack client" tests run the program under lvlip against a kernel server on 10.0.0.5 (or
0.0.0.0, started after the daemon: 10.0.0.5 is added to tap0 when it starts); "stack server"
tests run the server under lvlip on 10.0.0.4 with kernel clients. Every process is bounded in
time and killed (its own process group, by pid) at teardown. A missing tool is a failure:
scripts/install-deps installs them all.
"""

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from harness import KERNEL_IP, STACK_IP
from processes import assert_on_stack, bounded, need, ok, stack_ss, tail, wait_until

MB = 1 << 20
PY = sys.executable

# Ports, distinct across the file.
P_URLLIB = 8001
P_URLLIB_TIMEOUT = 8002
P_WGET_CURL = 8003
P_REFUSED = 8009
P_NC_UP = 8101
P_NC_DOWN = 8102
P_NC_BOTH_STACK_CONNECTOR = 8103
P_NC_BOTH_STACK_LISTENER = 8104
P_HTTP_STACK = 8201
P_ASYNCIO_STACK_SERVER = 8301
P_ASYNCIO_KERNEL_SERVER = 8302
P_SOCAT_UP = 8401
P_SOCAT_DOWN = 8402
P_SOCAT_ECHO = 8403
P_REDIS_KERNEL = 6380
P_REDIS_KERNEL_THREADS = 6381
P_REDIS_KERNEL_BIG = 6382
P_REDIS_STACK = 6390
P_IPERF = {"": 5211, "-R": 5212, "-Z": 5213}
P_IPERF_STACK = 5214
P_NGINX = 8081


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def assert_same_file(got, expected):
    got, expected = Path(got), Path(expected)
    assert got.exists(), f"{got} was not written"
    size, want = got.stat().st_size, expected.stat().st_size
    assert (size, sha256(got)) == (want, sha256(expected)), \
        f"{got}: {size} bytes, expected the {want} bytes of {expected.name}"


@pytest.fixture(scope="module")
def data():
    """Random files shared by the tests of this module (10 MB, 3 MB, 2 MB, 1 MB...). Servers run
    as their packages run them read these as nobody (nginx's workers), so they live in a
    directory of their own that everyone may read, not under pytest's private temporary root."""
    path = Path(tempfile.mkdtemp(prefix="lvlip-compat-"))
    path.chmod(0o755)
    files = {}
    for name, size in (("big", 10 * MB), ("three", 3 * MB), ("reply", 3 * MB + 12345), ("two", 2 * MB),
                       ("one0", MB), ("one1", MB + 1), ("one2", MB + 777), ("small", 100 * 1024)):
        files[name] = path / f"{name}.bin"
        with open(files[name], "wb") as f:
            f.write(os.urandom(size))
        files[name].chmod(0o644)
    files["dir"] = path
    yield files
    shutil.rmtree(path, ignore_errors=True)


def kernel_ss(*options) -> str:
    """The kernel's TCP sockets (ss -Htn, or -Hltn with "-l")."""
    return subprocess.run(["ss", "-Htn", *options], capture_output=True, text=True, timeout=10).stdout


def _listening(lines, port):
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "LISTEN" and fields[3].endswith(f":{port}"):
            return True
    return False


def wait_kernel_listener(port, proc, procs, timeout=10):
    wait_until(lambda: _listening(kernel_ss("-l").splitlines(), port),
               timeout, f"a kernel listener on port {port}", proc, procs)


def wait_stack_listener(daemon, port, proc, procs, timeout=10):
    wait_until(lambda: _listening(stack_ss(daemon, listening=True).splitlines()[1:], port),
               timeout, f"a stack listener on port {port}", proc, procs)


def kernel_http_server(procs, data, port):
    server = procs.start("http-server", [PY, "-m", "http.server", port, "--bind", "0.0.0.0",
                                         "--directory", data["dir"]])
    wait_kernel_listener(port, server, procs)
    return server


# MARK: - 1. python3 urllib (stack client)


URLLIB_CLIENT = """
import hashlib, sys, urllib.request
url, timeout, out = sys.argv[1], sys.argv[2], sys.argv[3]
kwargs = {} if timeout == "none" else {"timeout": float(timeout)}
with urllib.request.urlopen(url, **kwargs) as response:
    body = response.read()
with open(out, "wb") as f:
    f.write(body)
print(len(body), hashlib.sha256(body).hexdigest())
"""


@pytest.mark.parametrize("timeout,port", [("none", P_URLLIB), ("5", P_URLLIB_TIMEOUT)],
                         ids=["blocking", "timeout5"])
def test_python_urllib_downloads_from_kernel_http_server(daemon, procs, data, workdir, timeout, port):
    """urlopen without a timeout (blocking connect) and with timeout=5 (FIONBIO, a
    non-blocking connect, poll, SO_ERROR)."""
    kernel_http_server(procs, data, port)
    out = workdir / "urllib.bin"
    result = ok(bounded([PY, "-c", URLLIB_CLIENT, f"http://{KERNEL_IP}:{port}/big.bin", timeout, out],
                        timeout=60, stack=daemon))
    assert result.stdout.split() == [str(data["big"].stat().st_size), sha256(data["big"])]
    assert_same_file(out, data["big"])
    assert_on_stack(daemon, active=1)


# MARK: - 2. wget, curl (stack client)


def test_wget_and_curl_download_from_kernel_http_server(daemon, procs, data, workdir):
    need("wget", "curl")
    kernel_http_server(procs, data, P_WGET_CURL)
    url = f"http://{KERNEL_IP}:{P_WGET_CURL}/big.bin"
    ok(bounded(["wget", "-q", "--tries=1", "--timeout=30", "-O", workdir / "wget.bin", url], timeout=60, stack=daemon))
    assert_same_file(workdir / "wget.bin", data["big"])
    ok(bounded(["curl", "-sS", "--max-time", "30", "-o", workdir / "curl.bin", url], timeout=60, stack=daemon))
    assert_same_file(workdir / "curl.bin", data["big"])
    assert_on_stack(daemon, active=2)


def test_curl_to_closed_kernel_port_is_refused_at_once(daemon):
    need("curl")
    started = time.monotonic()
    result = bounded(["curl", "-v", "--max-time", "10", f"http://{KERNEL_IP}:{P_REFUSED}/"], timeout=20, stack=daemon)
    elapsed = time.monotonic() - started
    assert result.returncode == 7, f"curl exited {result.returncode}: {result.stderr}"
    assert "Connection refused" in result.stderr, result.stderr
    assert elapsed < 2, f"refusal took {elapsed:.2f} s"
    assert_on_stack(daemon, active=1)


# MARK: - 3. netcat-openbsd with half-close


def test_nc_half_close_upload_from_stack_client(daemon, procs, data, workdir):
    need("nc")
    server = procs.start("nc-listen", ["nc", "-l", KERNEL_IP, P_NC_UP], stdout=workdir / "nc-up.bin")
    wait_kernel_listener(P_NC_UP, server, procs)
    client = procs.start("nc-client", ["nc", "-N", KERNEL_IP, P_NC_UP], stack=True, stdin=data["three"])
    procs.finish(client, 30)
    procs.finish(server, 30)
    assert_same_file(workdir / "nc-up.bin", data["three"])
    assert_on_stack(daemon, active=1)


def test_nc_half_close_upload_to_stack_server(daemon, procs, data, workdir):
    need("nc")
    server = procs.start("nc-listen", ["nc", "-l", STACK_IP, P_NC_DOWN], stack=True, stdout=workdir / "nc-down.bin")
    wait_stack_listener(daemon, P_NC_DOWN, server, procs)
    client = procs.start("nc-client", ["nc", "-N", STACK_IP, P_NC_DOWN], stdin=data["three"])
    procs.finish(client, 30)
    procs.finish(server, 30)
    assert_same_file(workdir / "nc-down.bin", data["three"])
    assert_on_stack(daemon, passive=1)


def _close_wait(lines, port):
    """A connection whose peer is port, in CLOSE-WAIT (ss -tn and lvlipctl ss columns)."""
    return any(len(f) >= 5 and f[0] == "CLOSE-WAIT" and f[4].endswith(f":{port}") for f in map(str.split, lines))


@pytest.mark.parametrize("stack_side", ["listener", "connector"])
def test_nc_half_close_keeps_the_other_direction_open(daemon, procs, data, workdir, stack_side):
    """`nc -l -N` sends 3 MB and shuts down its write side. Only once the connecting
    `nc -N` has all of it and its socket is in CLOSE-WAIT (the FIN arrived) does it get a
    different 3 MB file on stdin: it must reach the half-closed listener whole, and both
    exit 0. (The reply goes from the connector: openbsd nc -l quits as soon as its network
    input ends, so it cannot be the side that answers after a FIN.)"""
    need("nc")
    on_stack = stack_side == "listener"
    port = P_NC_BOTH_STACK_LISTENER if on_stack else P_NC_BOTH_STACK_CONNECTOR
    listen_ip = STACK_IP if on_stack else KERNEL_IP
    listener = procs.start("nc-listen", ["nc", "-N", "-l", listen_ip, port], stack=on_stack, stdin=data["three"],
                           stdout=workdir / "to-listener.bin")
    if on_stack:
        wait_stack_listener(daemon, port, listener, procs)
    else:
        wait_kernel_listener(port, listener, procs)
    connector = procs.start("nc-connect", ["nc", "-N", listen_ip, port], stack=not on_stack, stdin=subprocess.PIPE,
                            stdout=workdir / "to-connector.bin")
    size = data["three"].stat().st_size
    wait_until(lambda: (workdir / "to-connector.bin").stat().st_size >= size, 30, "the listener's file to arrive",
               connector, procs)

    def connector_in_close_wait():
        lines = stack_ss(daemon).splitlines()[1:] if not on_stack else kernel_ss().splitlines()
        return _close_wait(lines, port)

    wait_until(connector_in_close_wait, 10, "the connector's socket to reach CLOSE-WAIT (the listener's FIN)",
               connector, procs)
    assert listener.poll() is None, f"the listener exited before the reply: {procs.describe(listener)}"
    assert (workdir / "to-listener.bin").stat().st_size == 0

    def reply():
        try:
            connector.stdin.write(data["reply"].read_bytes())
            connector.stdin.close()
        except OSError:
            pass  # the connector died: finish() says how

    writer = threading.Thread(target=reply, daemon=True)
    writer.start()
    procs.finish(connector, 30)
    procs.finish(listener, 30)
    writer.join(5)
    assert_same_file(workdir / "to-connector.bin", data["three"])
    assert_same_file(workdir / "to-listener.bin", data["reply"])
    assert_on_stack(daemon, active=0 if on_stack else 1, passive=1 if on_stack else 0)


# MARK: - 4. python3 http.server (stack server)


def test_two_concurrent_curls_from_stack_http_server(daemon, procs, data, workdir):
    need("curl")
    server = procs.start("http-server", [PY, "-m", "http.server", P_HTTP_STACK, "--bind", STACK_IP,
                                         "--directory", data["dir"]], stack=True)
    wait_stack_listener(daemon, P_HTTP_STACK, server, procs)
    url = f"http://{STACK_IP}:{P_HTTP_STACK}/big.bin"
    curls = [procs.start(f"curl{i}", ["curl", "-sS", "--max-time", "60", "-o", workdir / f"curl{i}.bin", url])
             for i in range(2)]
    for curl in curls:
        procs.finish(curl, 70)
    for i in range(2):
        assert_same_file(workdir / f"curl{i}.bin", data["big"])
    assert server.poll() is None, procs.describe(server)
    assert_on_stack(daemon, passive=2)


# MARK: - 5. asyncio echo (level-triggered epoll: asyncio's default selector)


ASYNCIO_SERVER = """
import asyncio, sys

async def main(host, port):
    done = asyncio.Event()
    async def handle(reader, writer):
        total = 0
        while True:
            block = await reader.read(1 << 16)
            if not block:
                break
            writer.write(block)
            await writer.drain()
            total += len(block)
        writer.write_eof()
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        print("echoed", total, flush=True)
        done.set()
    server = await asyncio.start_server(handle, host, port)
    print("listening", flush=True)
    await asyncio.wait_for(done.wait(), 60)
    server.close()
    await server.wait_closed()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""

ASYNCIO_CLIENT = """
import asyncio, hashlib, sys

async def main(host, port, path):
    data = open(path, "rb").read()
    reader, writer = await asyncio.open_connection(host, port)
    async def send():
        for i in range(0, len(data), 50000):
            writer.write(data[i:i + 50000])
            await writer.drain()
        writer.write_eof()
    async def receive():
        chunks = []
        while True:
            block = await reader.read(1 << 16)
            if not block:
                return b"".join(chunks)
            chunks.append(block)
    _, echoed = await asyncio.wait_for(asyncio.gather(send(), receive()), 60)
    writer.close()
    await writer.wait_closed()
    print(len(echoed), hashlib.sha256(echoed).hexdigest())
    sys.exit(0 if echoed == data else 1)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""


@pytest.mark.parametrize("stack_side", ["server", "client"])
def test_asyncio_echo(daemon, procs, data, workdir, stack_side):
    server_ip = STACK_IP if stack_side == "server" else KERNEL_IP
    port = P_ASYNCIO_STACK_SERVER if stack_side == "server" else P_ASYNCIO_KERNEL_SERVER
    server = procs.start("asyncio-server", [PY, "-c", ASYNCIO_SERVER, server_ip, port], stack=stack_side == "server")
    wait_until(lambda: b"listening" in server.out_path.read_bytes(), 10, "the asyncio server", server, procs)
    client = procs.start("asyncio-client", [PY, "-c", ASYNCIO_CLIENT, server_ip, port, data["two"]],
                         stack=stack_side == "client")
    procs.finish(client, 60)
    procs.finish(server, 10)
    size = data["two"].stat().st_size
    assert client.out_path.read_text().split() == [str(size), sha256(data["two"])]
    assert server.out_path.read_text().split() == ["listening", "echoed", str(size)]
    assert_on_stack(daemon, active=0 if stack_side == "server" else 1, passive=1 if stack_side == "server" else 0)


# MARK: - 6. socat


def test_socat_file_transfer_both_ways(daemon, procs, data, workdir):
    need("socat")
    # stack client -> kernel server
    out = workdir / "socat-up.bin"
    server = procs.start("socat-listen-kernel", ["socat", "-u", f"TCP-LISTEN:{P_SOCAT_UP},bind={KERNEL_IP},reuseaddr",
                                                 f"CREATE:{out}"])
    wait_kernel_listener(P_SOCAT_UP, server, procs)
    client = procs.start("socat-send-stack", ["socat", "-u", f"FILE:{data['three']}", f"TCP:{KERNEL_IP}:{P_SOCAT_UP}"],
                         stack=True)
    procs.finish(client, 30)
    procs.finish(server, 30)
    assert_same_file(out, data["three"])
    assert_on_stack(daemon, active=1)
    # kernel client -> stack server
    out = workdir / "socat-down.bin"
    server = procs.start("socat-listen-stack", ["socat", "-u", f"TCP-LISTEN:{P_SOCAT_DOWN},bind={STACK_IP},reuseaddr",
                                                f"CREATE:{out}"], stack=True)
    wait_stack_listener(daemon, P_SOCAT_DOWN, server, procs)
    client = procs.start("socat-send-kernel", ["socat", "-u", f"FILE:{data['three']}", f"TCP:{STACK_IP}:{P_SOCAT_DOWN}"])
    procs.finish(client, 30)
    procs.finish(server, 30)
    assert_same_file(out, data["three"])
    assert_on_stack(daemon, active=1, passive=1)


def test_socat_forking_echo_server_on_stack_three_concurrent_clients(daemon, procs, data, workdir):
    need("socat")
    server = procs.start("socat-echo", ["socat", "-t", "30", f"TCP-LISTEN:{P_SOCAT_ECHO},bind={STACK_IP},fork,reuseaddr",
                                        "EXEC:cat"], stack=True)
    wait_stack_listener(daemon, P_SOCAT_ECHO, server, procs)
    names = ["one0", "one1", "one2"]
    clients = [procs.start(f"socat-client{i}", ["socat", "-t", "30", "-", f"TCP:{STACK_IP}:{P_SOCAT_ECHO}"],
                           stdin=data[name], stdout=workdir / f"echo{i}.bin") for i, name in enumerate(names)]
    for client in clients:
        procs.finish(client, 40)
    for i, name in enumerate(names):
        assert_same_file(workdir / f"echo{i}.bin", data[name])
    assert server.poll() is None, procs.describe(server)
    assert_on_stack(daemon, passive=3)


# MARK: - 7. redis


def redis_config(workdir, port, bind) -> Path:
    conf = workdir / f"redis-{port}.conf"
    conf.write_text(f"port {port}\nbind {bind}\nprotected-mode no\nsave \"\"\nappendonly no\ndaemonize no\n"
                    f"dir {workdir}\nlogfile \"\"\n")
    return conf


def start_redis(procs, workdir, port, bind, stack):
    server = procs.start(f"redis-server-{port}", ["redis-server", redis_config(workdir, port, bind)], stack=stack)
    host = STACK_IP if stack else KERNEL_IP

    def answers():
        try:
            result = subprocess.run(["redis-cli", "-h", host, "-p", str(port), "ping"], capture_output=True, text=True,
                                    timeout=5, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return False
        return result.stdout.strip() == "PONG"

    wait_until(answers, 15, f"redis-server on {host}:{port}", server, procs)
    return server


BENCHMARK_TESTS = ("SET", "GET", "INCR", "LPUSH")
BENCHMARK_REQUESTS = 2000


def benchmark(host, port, *options, stack=None):
    """Runs redis-benchmark (on the stack with stack=daemon) for SET, GET, INCR and LPUSH,
    then checks what it did with redis-cli from the kernel's side: each test reported a
    rate, the server counted every request of each test (INFO commandstats), and the values
    written read back (SET's 3-byte value, the counter INCR raised, the list LPUSH grew)."""
    result = ok(bounded(["redis-benchmark", *options, "-h", host, "-p", port, "-n", str(BENCHMARK_REQUESTS),
                         "-t", ",".join(BENCHMARK_TESTS).lower(), "--csv"], timeout=60, stack=stack))
    rows = list(csv.reader(result.stdout.splitlines()))
    rates = {row[0]: float(row[1]) for row in rows[1:] if len(row) > 1}
    assert sorted(rates) == sorted(BENCHMARK_TESTS) and all(rate > 0 for rate in rates.values()), result.stdout
    cli = ["redis-cli", "-h", host, "-p", port]
    stats = ok(bounded([*cli, "info", "commandstats"], timeout=15)).stdout
    calls = {name: int(count) for name, count in re.findall(r"cmdstat_(\w+):calls=(\d+)", stats)}
    for test in BENCHMARK_TESTS:
        assert calls.get(test.lower()) == BENCHMARK_REQUESTS, f"{test}: {calls.get(test.lower())} calls\n{stats}"
    assert ok(bounded([*cli, "get", "key:__rand_int__"], timeout=15)).stdout.strip() == "VXK"
    assert ok(bounded([*cli, "get", "counter:__rand_int__"], timeout=15)).stdout.strip() == str(BENCHMARK_REQUESTS)
    assert ok(bounded([*cli, "llen", "mylist"], timeout=15)).stdout.strip() == str(BENCHMARK_REQUESTS)


def test_redis_stack_clients_ping_and_benchmark_kernel_server(daemon, procs, workdir):
    need("redis-server", "redis-cli", "redis-benchmark")
    start_redis(procs, workdir, P_REDIS_KERNEL, KERNEL_IP, stack=False)
    result = ok(bounded(["redis-cli", "-h", KERNEL_IP, "-p", P_REDIS_KERNEL, "ping"], timeout=15, stack=daemon))
    assert result.stdout.strip() == "PONG"
    benchmark(KERNEL_IP, P_REDIS_KERNEL, stack=daemon)
    assert_on_stack(daemon, active=51)  # redis-cli, then redis-benchmark's 50 clients


def test_redis_benchmark_threads_on_stack_against_kernel_server(daemon, procs, workdir):
    need("redis-server", "redis-benchmark")
    start_redis(procs, workdir, P_REDIS_KERNEL_THREADS, KERNEL_IP, stack=False)
    benchmark(KERNEL_IP, P_REDIS_KERNEL_THREADS, "--threads", "2", stack=daemon)
    assert_on_stack(daemon, active=50)


def test_redis_cli_set_and_get_200k_value_from_stack(daemon, procs, workdir):
    need("redis-server", "redis-cli")
    start_redis(procs, workdir, P_REDIS_KERNEL_BIG, "0.0.0.0", stack=False)
    value = workdir / "value.txt"
    value.write_bytes(os.urandom(100 * 1024).hex().encode())  # 200 KB, no newline
    cli = ["redis-cli", "-h", KERNEL_IP, "-p", P_REDIS_KERNEL_BIG]
    result = ok(bounded([*cli, "-x", "set", "k"], timeout=15, stack=daemon, stdin=value))
    assert result.stdout.strip() == "OK", result.stdout
    result = ok(bounded([*cli, "--raw", "get", "k"], timeout=15, stack=daemon, text=False))
    assert result.stdout == value.read_bytes() + b"\n", f"got {len(result.stdout)} bytes"
    result = ok(bounded([*cli, "strlen", "k"], timeout=15, stack=daemon))
    assert result.stdout.strip() == str(200 * 1024)
    assert_on_stack(daemon, active=3)


def test_redis_server_on_stack_kernel_benchmark(daemon, procs, workdir):
    need("redis-server", "redis-cli", "redis-benchmark")
    server = start_redis(procs, workdir, P_REDIS_STACK, "* -::*", stack=True)
    benchmark(STACK_IP, P_REDIS_STACK)
    assert_on_stack(daemon, passive=51)
    assert procs.stop(server, signal.SIGTERM, timeout=10) == 0, procs.describe(server)


# MARK: - 8. iperf3


IPERF_BYTES = 1 << 30
IPERF_BLOCK = 128 << 10  # iperf3 writes whole blocks: -n may be passed by one
# iperf3 ends a test with a message on its control connection, and the receiver stops
# counting when that arrives: bytes still in flight on the data connection (socket buffers
# at both ends and the window between them) are sent but never counted, on any stack
# except the kernel's loopback. lvlipd's send buffer grows to 4 MB; the kernel's receive
# window to 6 MB.
IPERF_IN_FLIGHT = 12 << 20
# Least payload per segment: the stack sends MSS-sized ones on tap0 (MTU 1500); the kernel
# hands the TAP GSO frames of up to 64 KB.
STACK_SEGMENT = 1460
KERNEL_SEGMENT = 65536


def iperf_transfer(text):
    """(bytes sent, bytes received) from one end's -J report."""
    report = json.loads(text)
    assert "error" not in report, report["error"]
    end = report["end"]
    return end["sum_sent"]["bytes"], end["sum_received"]["bytes"]


def check_iperf(client_report, server, procs, before, after, stack_sends):
    """A byte count (-n) test: the sender sent that many bytes (to a block), the receiver counted
    all of them but what was in flight at the end, both ends' own reports agree (the server's
    names only what it did itself: it sent, with -R, or received), and the stack's segment
    counters moved for at least the bytes it carried in that direction."""
    procs.finish(server, 15)
    sent, received = iperf_transfer(client_report)
    server_sent, server_received = iperf_transfer(server.out_path.read_text())
    print(f"iperf3: {sent} bytes sent, {received} received; the server says {server_sent} and {server_received}")
    assert IPERF_BYTES <= sent <= IPERF_BYTES + IPERF_BLOCK, sent
    assert 0 <= sent - received <= IPERF_IN_FLIGHT, f"{sent} bytes sent, {received} received"
    assert (server_sent, server_received) in ((sent, 0), (0, received)), \
        f"the server reports {server_sent} sent, {server_received} received; the client {sent} and {received}"
    counter, least = ("TcpOutSegs", STACK_SEGMENT) if stack_sends else ("TcpInSegs", KERNEL_SEGMENT)
    moved = after[counter] - before[counter]
    assert moved >= received // least, f"{counter} moved by {moved} for {received} bytes"


@pytest.mark.parametrize("mode", ["", "-R", "-Z"], ids=["upload", "reverse", "sendfile"])
def test_iperf3_client_on_stack(daemon, procs, mode):
    need("iperf3")
    port = P_IPERF[mode]
    server = procs.start("iperf3-server", ["iperf3", "-s", "-B", KERNEL_IP, "-p", port, "-1", "-J"])
    wait_kernel_listener(port, server, procs)
    before = daemon.stats()
    result = ok(bounded(["iperf3", "-c", KERNEL_IP, "-p", port, "-n", str(IPERF_BYTES), "-J", *([mode] if mode else [])],
                        timeout=40, stack=daemon))
    after = assert_on_stack(daemon, active=2)  # the control connection and the data stream
    check_iperf(result.stdout, server, procs, before, after, stack_sends=mode != "-R")


def test_iperf3_server_on_stack_dual_stack_listener(daemon, procs):
    need("iperf3")
    server = procs.start("iperf3-server", ["iperf3", "-s", "-1", "-J", "-p", P_IPERF_STACK], stack=True)
    wait_stack_listener(daemon, P_IPERF_STACK, server, procs)
    before = daemon.stats()
    result = ok(bounded(["iperf3", "-c", STACK_IP, "-p", P_IPERF_STACK, "-n", str(IPERF_BYTES), "-J"], timeout=40))
    after = assert_on_stack(daemon, passive=2)
    check_iperf(result.stdout, server, procs, before, after, stack_sends=False)


# MARK: - 9. nginx (master and two workers on the stack)


NGINX_CONF = """
worker_processes 2;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log notice;
events {{ use epoll; worker_connections 256; }}
http {{
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30;
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen {ip}:{port};
        root {root};
    }}
}}
"""


def test_nginx_on_stack_concurrent_downloads_and_keepalive(daemon, procs, data, workdir):
    need("nginx", "curl")
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=workdir, ip=STACK_IP, port=P_NGINX, root=data["dir"]))
    nginx = procs.start("nginx", ["nginx", "-p", workdir, "-c", conf, "-e", workdir / "nginx-error.log"], stack=True)
    try:
        wait_stack_listener(daemon, P_NGINX, nginx, procs)
        base = f"http://{STACK_IP}:{P_NGINX}"
        curls = [procs.start(f"curl{i}", ["curl", "-sS", "--max-time", "60", "-o", workdir / f"nginx{i}.bin",
                                          f"{base}/big.bin"]) for i in range(10)]
        for curl in curls:
            procs.finish(curl, 70)
        for i in range(10):
            assert_same_file(workdir / f"nginx{i}.bin", data["big"])
        # Keep-alive: three transfers, one connection.
        result = ok(bounded(["curl", "-sS", "-v", "--max-time", "30", f"{base}/small.bin", f"{base}/three.bin",
                             f"{base}/one1.bin", "-o", workdir / "ka0.bin", "-o", workdir / "ka1.bin",
                             "-o", workdir / "ka2.bin", "-w", "%{num_connects}\\n"], timeout=40))
        assert sum(int(n) for n in result.stdout.split()) == 1, f"{result.stdout}\n{result.stderr}"
        assert result.stderr.count("Re-using existing connection") == 2, result.stderr
        for i, name in enumerate(["small", "three", "one1"]):
            assert_same_file(workdir / f"ka{i}.bin", data[name])
        assert nginx.poll() is None, procs.describe(nginx)
        assert_on_stack(daemon, passive=11)
        # nginx's default user: its workers serve as nobody, through the connection each was
        # given before fork (lvlipd's socket does not admit nobody itself).
        workers = subprocess.run(["ps", "-o", "user=", "--ppid", str(nginx.pid)], capture_output=True, text=True).stdout
        assert workers.split() == ["nobody", "nobody"], workers
        assert "lvlip:" not in tail(nginx.err_path), procs.describe(nginx)
    finally:
        print(f"--- nginx error log ---\n{tail(workdir / 'nginx-error.log', 5000)}")
    status = procs.stop(nginx, signal.SIGQUIT, timeout=15)
    assert status == 0, procs.describe(nginx)
    log = (workdir / "nginx-error.log").read_text(errors="replace")
    for level in ("[alert]", "[crit]", "[emerg]"):
        assert level not in log, log
