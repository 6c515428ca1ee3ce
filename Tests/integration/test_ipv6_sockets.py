"""AF_INET6 sockets through the shim (issue 16): programs' IPv6 sockets on lvlip, clients and
servers, against the kernel on the other side of tap0 (lvlipd fd00::4/64 beside 10.0.0.4, the
kernel fd00::5/64). A [::] server on the stack meets IPv4 peers as ::ffff:a.b.c.d, IPV6_V6ONLY
keeps them out, link-local names carry tap0's index as their scope, dig and dnsmasq resolve
AAAA over UDP/IPv6 both ways, and IPPROTO_IPV6 options
answer as the kernel's do (compared call by call, as test_socket_options.py does for the rest).
Every test waits for lvlipd's DAD (its counters and lvlipctl neigh) before it connects."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import KERNEL_IP, STACK_IP, TAP, bin_dir, run
from processes import assert_on_stack, bounded, need, ok, run_script, stack_ss, wait_until
from test_ipv6 import KERNEL_IP6, STACK_IP6, start_ipv6_daemon
from test_socket_options import GENERIC, HOST_SPECIFIC, IP, IPV6, compare, run_probe

PY = sys.executable
P_HTTP_KERNEL, P_HTTP_STACK, P_NAMES, P_V6ONLY, P_LINK, P_IPERF, P_OPTS, P_UDP = (
    7601, 7602, 7603, 7604, 7605, 7606, 7607, 7608)
P_DNS = 53


@pytest.fixture
def daemon6(start_daemon):
    daemon = start_ipv6_daemon(start_daemon)
    # The address is usable: DAD done, as lvlipctl shows it.
    shown = run([bin_dir() / "lvlipctl", "neigh", "--socket", daemon.socket], check=True).stdout
    assert f"inet6 {STACK_IP6}/64 preferred" in shown, shown
    return daemon


@pytest.fixture
def procs6(daemon6, procs_for):
    return procs_for(daemon6)


@pytest.fixture
def files(workdir):
    directory = workdir / "www6"
    directory.mkdir(exist_ok=True)
    body = os.urandom(3 << 20)
    (directory / "blob").write_bytes(body)
    return directory, body


def kernel_listening(port):
    return f":{port} " in run(["ss", "-ltnH"], check=True).stdout


def stack_listening(daemon, port):
    return f":{port} " in stack_ss(daemon, listening=True)


def test_curl_6_downloads_from_a_kernel_server(daemon6, procs6, files, workdir):
    need("curl")
    directory, body = files
    server = procs6.start("http6", [PY, "-m", "http.server", P_HTTP_KERNEL, "--bind", KERNEL_IP6, "--directory", directory])
    wait_until(lambda: kernel_listening(P_HTTP_KERNEL), 10, "the kernel's http.server", server, procs6)
    out = workdir / "curl6.bin"
    ok(bounded(["curl", "-6", "-sS", "--max-time", "30", "-o", out, f"http://[{KERNEL_IP6}]:{P_HTTP_KERNEL}/blob"],
               timeout=60, stack=daemon6))
    assert out.read_bytes() == body
    assert_on_stack(daemon6, active=1)


def test_a_dual_stack_server_on_the_stack_serves_both_families(daemon6, procs6, files, workdir):
    need("curl")
    directory, body = files
    server = procs6.start("http-dual", [PY, "-m", "http.server", P_HTTP_STACK, "--bind", "::", "--directory", directory],
                         stack=True)
    wait_until(lambda: stack_listening(daemon6, P_HTTP_STACK), 10, "the stack's [::] listener", server, procs6)
    # ss's form for a dual-stack [::] listener, and lvlipctl ss -6 selects it.
    listeners = run([bin_dir() / "lvlipctl", "ss", "-l", "-6", "--socket", daemon6.socket], check=True).stdout
    assert f"*:{P_HTTP_STACK}" in listeners, listeners
    assert f"*:{P_HTTP_STACK}" not in run([bin_dir() / "lvlipctl", "ss", "-l", "-4", "--socket", daemon6.socket],
                                          check=True).stdout
    for name, host in (("v6", f"[{STACK_IP6}]"), ("v4", STACK_IP)):
        out = workdir / f"dual-{name}.bin"
        ok(bounded(["curl", "-g", "-sS", "--max-time", "30", "-o", out, f"http://{host}:{P_HTTP_STACK}/blob"], timeout=60))
        assert out.read_bytes() == body, name
    assert_on_stack(daemon6, passive=2)
    # http.server logs each client by getpeername: the IPv4 one v4-mapped.
    log = server.err_path.read_text()
    assert f"{KERNEL_IP6} - -" in log and f"::ffff:{KERNEL_IP} - -" in log, log


NAMES_SERVER = """
import json, socket, sys
port, v6only, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", port))
s.listen(8)
print(json.dumps({"listening": s.getsockname()[:2], "v6only": s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)}),
      flush=True)
for _ in range(count):
    c, peer = s.accept()
    print(json.dumps({"peer": peer[:2], "getpeername": c.getpeername()[:2], "local": c.getsockname()[:2]}), flush=True)
    c.close()
"""


def names_server(procs, port, v6only, count):
    server = procs.start(f"names{port}", [PY, "-c", NAMES_SERVER, port, v6only, count], stdout=subprocess.PIPE,
                         stack=True)
    first = json.loads(server.stdout.readline())
    assert first == {"listening": ["::", port], "v6only": v6only}, first
    return server


def test_peer_names_of_a_dual_stack_listener(daemon6, procs6):
    server = names_server(procs6, P_NAMES, 0, 2)
    for host in (KERNEL_IP, KERNEL_IP6):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as c:
            c.bind((host, 0))
            c.connect((STACK_IP if family == socket.AF_INET else STACK_IP6, P_NAMES))
            line = json.loads(server.stdout.readline())
            port = c.getsockname()[1]
            # The server closed its end, the kernel's is open: lvlipctl ss -6 shows the
            # connection finishing its close as an AF_INET6 socket's, as ss writes it (the
            # IPv4 one v4-mapped, though no application holds it any more).
            shown = run([bin_dir() / "lvlipctl", "ss", "-6", "--socket", daemon6.socket], check=True).stdout
            local_shown, peer_shown = ((f"[{STACK_IP6}]", f"[{KERNEL_IP6}]") if family == socket.AF_INET6
                                       else (f"[::ffff:{STACK_IP}]", f"[::ffff:{KERNEL_IP}]"))
            assert any(f"{local_shown}:{P_NAMES}" in l and f"{peer_shown}:{port}" in l for l in shown.splitlines()), shown
        peer = [f"::ffff:{KERNEL_IP}" if family == socket.AF_INET else KERNEL_IP6, port]
        local = [f"::ffff:{STACK_IP}" if family == socket.AF_INET else STACK_IP6, P_NAMES]
        assert line == {"peer": peer, "getpeername": peer, "local": local}, line
    procs6.finish(server, 10)


def test_a_v6only_listener_refuses_ipv4(daemon6, procs6):
    server = names_server(procs6, P_V6ONLY, 1, 1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((STACK_IP, P_V6ONLY), timeout=5)
    with socket.create_connection((STACK_IP6, P_V6ONLY), timeout=5):
        line = json.loads(server.stdout.readline())
    assert line["peer"][0] == KERNEL_IP6 and line["local"] == [STACK_IP6, P_V6ONLY], line
    procs6.finish(server, 10)


LINK_LOCAL_CLIENT = """
import errno, json, socket, sys
address, port, index = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = {}
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
try:
    s.connect((address, port, 0, 0))
except OSError as e:
    out["unscoped"] = errno.errorcode[e.errno]
s.close()
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.connect((address, port, 0, index))
out["local"] = s.getsockname()
out["peer"] = s.getpeername()
out["index"] = socket.if_nametoindex(sys.argv[4])
s.close()
print(json.dumps(out))
"""


def kernel_link_local():
    """The kernel side's fe80:: address once its own DAD is over (ip shows it tentative until then)."""
    found = []

    def ready():
        text = run(["ip", "-6", "-o", "addr", "show", "dev", TAP, "scope", "link"], check=True).stdout
        found[:] = [line.split()[3].split("/")[0] for line in text.splitlines() if "tentative" not in line]
        return bool(found)

    wait_until(ready, 10, "the kernel's link-local address on tap0")
    return found[0]


def test_link_local_names_carry_the_taps_scope(daemon6):
    address = kernel_link_local()
    index = socket.if_nametoindex(TAP)
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as listener:
        listener.bind(("::", P_LINK))
        listener.listen(4)
        result = bounded([PY, "-c", LINK_LOCAL_CLIENT, address, P_LINK, index, TAP], timeout=30, stack=daemon6)
        ok(result)
        out = json.loads(result.stdout.splitlines()[-1])
        conn, peer = listener.accept()
        conn.close()
    assert out["unscoped"] == "EINVAL", out
    assert out["index"] == index
    assert out["peer"] == [address, P_LINK, 0, index], out
    assert out["local"][0].startswith("fe80::") and out["local"][3] == index, out
    assert peer[0] == out["local"][0] and peer[1] == out["local"][1], (peer, out)


@pytest.mark.parametrize("mode", ["", "-R"], ids=["upload", "download"])
def test_iperf3_6_client_on_the_stack(daemon6, procs6, mode):
    need("iperf3")
    server = procs6.start("iperf3-6", ["iperf3", "-s", "-B", KERNEL_IP6, "-p", P_IPERF, "-1", "-J"])
    wait_until(lambda: kernel_listening(P_IPERF), 10, "the kernel's iperf3", server, procs6)
    before = daemon6.stats()
    result = ok(bounded(["iperf3", "-6", "-c", KERNEL_IP6, "-p", P_IPERF, "-t", "2", "-J", *([mode] if mode else [])],
                        timeout=40, stack=daemon6))
    after = daemon6.stats()
    report = json.loads(result.stdout)
    received = report["end"]["sum_received"]["bytes"]
    print(f"iperf3 -6 {mode or 'upload'}: {received} bytes in 2 s ({received * 8 / 2e6:.0f} Mbit/s)")
    assert received > 1 << 20, report["end"]
    # Segmentation offload both ways over IPv6 (GSO_TCPV6 out, TUN_F_TSO6 in): most TAP
    # writes and reads carry several segments' worth.
    writes, reads = (after[k] - before[k] for k in ("TapWrites", "TapReads"))
    segments_out = after["TcpOutSegs"] - before["TcpOutSegs"]
    if mode:
        assert reads * 4 * 1440 < received, f"{reads} TAP reads for {received} bytes"
    else:
        assert writes * 4 < segments_out, f"{writes} TAP writes for {segments_out} segments"
    assert report["start"]["connected"][0]["remote_host"] == KERNEL_IP6
    assert_on_stack(daemon6, active=2)
    procs6.finish(server, 15)


def test_nc_6_udp_both_directions(daemon6, procs6):
    need("nc")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as kernel:
        kernel.bind((KERNEL_IP6, P_UDP))
        kernel.settimeout(10)
        # nc on the stack as the client: to the kernel and back.
        client = procs6.start("nc6u", ["nc", "-6", "-u", "-w", "3", KERNEL_IP6, P_UDP], stdin=subprocess.PIPE,
                              stack=True)
        client.stdin.write(b"to the kernel\n")
        client.stdin.flush()
        data, peer = kernel.recvfrom(100)
        assert data == b"to the kernel\n" and peer[0] == STACK_IP6, (data, peer)
        kernel.sendto(b"to the stack\n", peer)
        wait_until(lambda: client.out_path.read_bytes() == b"to the stack\n", 10, "nc's reply", client, procs6)
        client.stdin.close()
        procs6.stop(client)
        # nc on the stack as the server: it answers whoever sent the first datagram.
        server = procs6.start("nc6ul", ["nc", "-6", "-u", "-l", STACK_IP6, P_UDP + 1], stdin=subprocess.PIPE, stack=True)
        wait_until(lambda: f":{P_UDP + 1} " in stack_ss(daemon6, udp=True), 10, "nc's UDP socket", server, procs6)
        kernel.sendto(b"to the server\n", (STACK_IP6, P_UDP + 1))
        wait_until(lambda: server.out_path.read_bytes() == b"to the server\n", 10, "the server's datagram", server, procs6)
        server.stdin.write(b"from the server\n")
        server.stdin.flush()
        data, peer = kernel.recvfrom(100)
        assert data == b"from the server\n" and peer[:2] == (STACK_IP6, P_UDP + 1), (data, peer)
        server.stdin.close()
        procs6.stop(server)


def test_dig_aaaa_on_the_stack_asks_a_kernel_dnsmasq_over_ipv6(daemon6, procs6, workdir):
    """dig (BIND's libuv network manager) on the stack asks a kernel dnsmasq at fd00::5 for an
    AAAA record over UDP/IPv6."""
    need("dnsmasq", "dig")
    dnsmasq = procs6.start("dnsmasq6", ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                                        f"--pid-file={workdir / 'dnsmasq6.pid'}", f"--port={P_DNS}",
                                        f"--listen-address={KERNEL_IP6}", "--bind-interfaces", "--no-resolv",
                                        "--no-hosts", "--address=/host.test/fd00::99", "--log-facility=-",
                                        "--log-queries"])
    wait_until(lambda: f"[{KERNEL_IP6}]:{P_DNS} " in run(["ss", "-Hlun"], check=True).stdout, 10,
               "the kernel's dnsmasq on fd00::5", dnsmasq, procs6)
    before = daemon6.stats()
    result = ok(bounded(["dig", "+short", "+time=2", "+tries=1", "AAAA", f"@{KERNEL_IP6}", "host.test"], timeout=20,
                        stack=daemon6))
    assert result.stdout.strip() == "fd00::99", f"stdout: {result.stdout!r} stderr: {result.stderr!r}"
    after = daemon6.stats()
    assert after["Udp6OutDatagrams"] - before["Udp6OutDatagrams"] == 1
    assert after["Udp6InDatagrams"] - before["Udp6InDatagrams"] == 1
    wait_until(lambda: f"query[AAAA] host.test from {STACK_IP6}" in dnsmasq.err_path.read_text(), 5,
               "dnsmasq to log the query from the stack", dnsmasq, procs6)


def test_dnsmasq_with_its_defaults_on_the_stack_answers_dig_6(daemon6, procs6, workdir):
    """dnsmasq as packaged (wildcard sockets: 0.0.0.0 and [::] with IPV6_RECVPKTINFO, which it
    needs to know the interface a query came in on) on the stack; the kernel's dig asks over
    IPv6 and over IPv4."""
    need("dnsmasq", "dig")
    dnsmasq = procs6.start("dnsmasq6-stack", ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                                              f"--pid-file={workdir / 'dnsmasq6-stack.pid'}", "--no-resolv",
                                              "--no-hosts", "--address=/host.test/fd00::98", "--log-facility=-"],
                           stack=True)
    wait_until(lambda: f":{P_DNS} " in stack_ss(daemon6, udp=True), 10, "dnsmasq's sockets on the stack", dnsmasq,
               procs6)
    for server in (STACK_IP6, STACK_IP):
        result = bounded(["dig", "+short", "+time=2", "+tries=2", "AAAA", f"@{server}", "host.test"], timeout=20)
        assert result.stdout.strip() == "fd00::98", f"@{server}: {result.stdout!r} {result.stderr!r}"


# IPPROTO_IPV6 names, and IPPROTO_IP on AF_INET6 sockets (which Linux mostly serves for
# v4-mapped traffic), on a fresh TCP socket, a UDP one and a connection to fd00::5.
V6_KINDS = ["tcp6", "udp6", "connected6"]


# The route's MTU (IPV6_MTU, IPV6_PATHMTU): lo's for the kernel's connection to its own
# fd00::5, tap0's for lvlip's.
HOST_SPECIFIC_6 = {**HOST_SPECIFIC, (IPV6, 24): "all", (IPV6, 61): "all"}


def v6_cases():
    names = [(IPV6, n) for n in range(1, 81)] + [(IP, n) for n in range(1, 60)]
    return [{"level": level, "name": name, "steps": GENERIC} for level, name in names]


def test_ipv6_options_answer_as_the_kernels(daemon6, workdir):
    all_cases = v6_cases()
    path = workdir / "cases6.json"
    path.write_text(json.dumps(all_cases))
    plain = dict(os.environ)
    plain.pop("LD_PRELOAD", None)
    mismatches = []
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind((KERNEL_IP6, P_OPTS))
        holder.listen(len(all_cases) * 2 + 8)
        for kind in V6_KINDS:
            kernel = run_probe(kind, path, plain, KERNEL_IP6, P_OPTS)
            stack = run_probe(kind, path, daemon6.lvlip_env(), KERNEL_IP6, P_OPTS)
            assert len(kernel) == len(stack) == len(all_cases)
            mismatches += compare(all_cases, kind, kernel, stack, HOST_SPECIFIC_6)
    assert not mismatches, f"{len(mismatches)} answers differ from the kernel's:\n" + "\n".join(mismatches)


# The kernel's checks of sockaddr_in6 and IPV6_V6ONLY, made with raw libc calls (Python's
# own socket methods check lengths first) on AF_INET6 and AF_INET TCP sockets and AF_INET6
# UDP ones.
ADDRESS_CHECKS = """
import ctypes, errno, json, socket, struct
libc = ctypes.CDLL(None, use_errno=True)

def sin6(address, port=0, scope=0, length=28):
    raw = struct.pack("<H", socket.AF_INET6) + struct.pack("!HI", port, 0) + socket.inet_pton(socket.AF_INET6, address)
    return (raw + struct.pack("<I", scope))[:length]

def sin(address, port=0):
    return struct.pack("<H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(address) + bytes(8)

def call(function, s, raw):
    r = function(s.fileno(), ctypes.c_char_p(raw), len(raw))
    return "ok" if r == 0 else errno.errorcode[ctypes.get_errno()]

def v6only(s, value):
    v = ctypes.c_int(value)
    r = libc.setsockopt(s.fileno(), socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, ctypes.byref(v), 4)
    return "ok" if r == 0 else errno.errorcode[ctypes.get_errno()]

out = {}
fresh = lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
out["bind 20-byte sockaddr_in6"] = call(libc.bind, fresh(), sin6("::", length=20))
out["bind sockaddr_in on AF_INET6"] = call(libc.bind, fresh(), sin("0.0.0.0"))
out["connect sockaddr_in on AF_INET6"] = call(libc.connect, fresh(), sin("10.0.0.5", 9))
out["connect link-local without scope"] = call(libc.connect, fresh(), sin6("fe80::1", 9))
out["bind sockaddr_in6 on AF_INET"] = call(libc.bind, socket.socket(socket.AF_INET, socket.SOCK_STREAM), sin6("::"))
s = fresh()
out["v6only before bind"] = v6only(s, 1)
out["connect v4-mapped when v6only"] = call(libc.connect, s, sin6("::ffff:10.0.0.5", 9))
out["bind v4-mapped when v6only"] = call(libc.bind, s, sin6("::ffff:0.0.0.0"))
s = fresh()
out["bind 24-byte sockaddr_in6"] = call(libc.bind, s, sin6("::", length=24))
out["v6only after bind"] = v6only(s, 1)
out["name of a socket bound to [::]"] = s.getsockname()[0]
out["name of an unbound AF_INET6 socket"] = fresh().getsockname()
# A UDP AF_INET6 socket takes AF_INET peers too, unless IPv6-only.
udp = lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u = udp()
out["udp connect sockaddr_in"] = call(libc.connect, u, sin("10.0.0.5", 9))
out["udp peer after connecting sockaddr_in"] = u.getpeername()
u = udp()
v6only(u, 1)
out["udp connect sockaddr_in when v6only"] = call(libc.connect, u, sin("10.0.0.5", 9))
out["udp connect v4-mapped when v6only"] = call(libc.connect, u, sin6("::ffff:10.0.0.5", 9))
send = lambda s, raw: "ok" if libc.sendto(s.fileno(), b"x", 1, 0, ctypes.c_char_p(raw), len(raw)) == 1 \
    else errno.errorcode[ctypes.get_errno()]
out["udp sendto sockaddr_in when v6only"] = send(u, sin("10.0.0.5", 9))
out["udp sendto v4-mapped when v6only"] = send(u, sin6("::ffff:10.0.0.5", 9))
out["udp sendto sockaddr_in"] = send(udp(), sin("10.0.0.5", 9))
print(json.dumps(out))
"""


def test_address_checks_answer_as_the_kernels(daemon6):
    kernel = run_script(ADDRESS_CHECKS)
    stack = run_script(ADDRESS_CHECKS, stack=daemon6)
    assert stack == kernel, f"kernel {kernel}\nlvlip  {stack}"
    assert kernel["connect link-local without scope"] == "EINVAL"
    assert kernel["connect v4-mapped when v6only"] == "ENETUNREACH"
