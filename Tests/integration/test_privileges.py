"""Programs that drop privileges keep using lvlip, as a kernel socket opened before setuid keeps
working (docs/shim.md, "Credentials"), while what a request may do is judged by who makes it
now: an unprivileged bind below 1024 gets EACCES, as from Linux.

The shim opens its control connection when it loads and, for every fork child, in the parent
just before the fork; lvlipd reads the sender's credentials with every request. Each scenario
runs a real program as its users run it (memcached -u nobody) or a small Python program that
drops to nobody (65534) the ways daemons do; where the kernel can run the same program, it
does, and lvlip must answer the same.
"""

import os
import socket

import pytest

from harness import KERNEL_IP, STACK_IP
from kernel_servers import KernelServer, echo
from processes import assert_on_stack, need, run_script, tail, wait_until

NOBODY = 65534

P_ECHO = 7401
P_MEMCACHED = 11211


@pytest.fixture
def kernel_echo(daemon):
    server = KernelServer(P_ECHO, echo, host=KERNEL_IP)
    yield server
    server.close()


# Helpers every scenario program starts with: privilege dropping as daemons do it, and a
# round trip through the kernel echo server that checks every byte.
PRELUDE = """
import encodings.idna, errno, json, os, socket, sys  # idna: imported before the interpreter's files may be unreadable

def drop(uid=65534):
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)

def echo_round_trip(host, port, size=200000):
    data = os.urandom(size)
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := s.recv(65536):
            got += chunk
    return bytes(got) == data

def bind_errno(port):
    s = socket.socket()
    try:
        s.bind(("0.0.0.0", port))
        return 0
    except OSError as error:
        return errno.errorcode.get(error.errno, error.errno)
    finally:
        s.close()
"""


FORK_THEN_DROP = """
host, port = sys.argv[1], int(sys.argv[2])
reader, writer = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(reader)
    drop()
    result = {"uid": os.getuid(), "echo": echo_round_trip(host, port), "bind80": bind_errno(80),
              "bind8080": bind_errno(8080)}
    os.write(writer, json.dumps(result).encode())
    os._exit(0)
os.close(writer)
child = json.loads(os.read(reader, 4096))
_, status = os.waitpid(pid, 0)
print(json.dumps({"child": child, "status": status, "parent_echo": echo_round_trip(host, port),
                  "parent_bind80": bind_errno(80)}))
"""


def test_fork_child_drops_privileges_then_connects(daemon, kernel_echo):
    stack, stack_stderr = run_script(PRELUDE + FORK_THEN_DROP, KERNEL_IP, P_ECHO, stack=daemon, stderr=True)
    kernel = run_script(PRELUDE + FORK_THEN_DROP, KERNEL_IP, P_ECHO)
    assert stack["child"] == {"uid": NOBODY, "echo": True, "bind80": "EACCES", "bind8080": 0}, stack
    assert stack["status"] == 0 and stack["parent_echo"] and stack["parent_bind80"] == 0, stack
    assert "lvlip:" not in stack_stderr, stack_stderr
    # The same program on the kernel's own sockets answers the same.
    for key in ("child", "parent_echo", "parent_bind80"):
        assert stack[key] == kernel[key], (stack, kernel)
    assert_on_stack(daemon, active=2)


DROP_BEFORE_FIRST_SOCKET = """
host, port = sys.argv[1], int(sys.argv[2])
how = sys.argv[3]
if how == "closerange":
    os.closerange(3, 65536)            # close_range(2) through libc
elif how == "syscall":
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall(436, 3, 0xFFFFFFFF, 0)  # SYS_close_range, bypassing the libc wrapper
elif how == "loop":
    for fd in sorted(int(name) for name in os.listdir("/proc/self/fd")):
        if fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass
drop()
print(json.dumps({"uid": os.getuid(), "echo": echo_round_trip(host, port), "bind80": bind_errno(80),
                  "bind1023": bind_errno(1023), "bind1024": bind_errno(1024)}))
"""


@pytest.mark.parametrize("how", ["none", "closerange", "syscall", "loop"])
def test_drop_privileges_before_the_first_socket(daemon, kernel_echo, how):
    stack, stack_stderr = run_script(PRELUDE + DROP_BEFORE_FIRST_SOCKET, KERNEL_IP, P_ECHO, how, stack=daemon,
                                     stderr=True)
    kernel = run_script(PRELUDE + DROP_BEFORE_FIRST_SOCKET, KERNEL_IP, P_ECHO, how)
    expected = {"uid": NOBODY, "echo": True, "bind80": "EACCES", "bind1023": "EACCES", "bind1024": 0}
    assert {k: stack[k] for k in expected} == expected, stack
    assert {k: kernel[k] for k in expected} == expected, kernel
    assert "lvlip:" not in stack_stderr, stack_stderr
    assert_on_stack(daemon, active=1)


EXEC_AFTER_DROP = """
import subprocess
drop()
# nc, not this interpreter: a program nobody may run (Python may live under /root).
child = subprocess.run(["nc", "-n", "-w", "5", "-z", sys.argv[1], sys.argv[2]], capture_output=True, text=True,
                       timeout=20)
print(json.dumps({"status": child.returncode, "err": child.stderr}))
"""


def test_exec_after_dropping_privileges_fails_clearly(daemon, kernel_echo):
    """A new program started by a process that has become a user the daemon's socket does not
    admit opens its own connection, and is refused: the socket call fails at once (ENETDOWN;
    nc -z exits 1) and stderr gets one line that names the cause (never a hang). docs/shim.md says how to
    admit such users."""
    need("nc")
    out = run_script(PRELUDE + EXEC_AFTER_DROP, KERNEL_IP, P_ECHO, stack=daemon)
    assert out["status"] != 0, out
    assert f"uid {NOBODY} may not open it" in out["err"] and "Permission denied" in out["err"], out


def test_memcached_as_nobody_on_stack(daemon, procs):
    """memcached -u nobody: it calls setuid before its first socket."""
    need("memcached")
    server = procs.start("memcached", ["memcached", "-u", "nobody", "-l", STACK_IP, "-p", P_MEMCACHED, "-U", "0"],
                         stack=True)

    def listening():
        try:
            with socket.create_connection((STACK_IP, P_MEMCACHED), timeout=1):
                return True
        except OSError:
            return False

    wait_until(listening, 10, "memcached listening on the stack", server, procs)
    with open(f"/proc/{server.pid}/status") as f:
        uid_line = next(line for line in f if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(NOBODY)] * 4, uid_line
    values = {f"key{i}": os.urandom(1000 * (i + 1)).hex().encode() for i in range(20)}
    with socket.create_connection((STACK_IP, P_MEMCACHED), timeout=10) as s:
        f = s.makefile("rwb")
        for key, value in values.items():
            f.write(b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(value), value))
            f.flush()
            assert f.readline() == b"STORED\r\n"
        for key, value in values.items():
            f.write(b"get %s\r\n" % key.encode())
            f.flush()
            assert f.readline() == b"VALUE %s 0 %d\r\n" % (key.encode(), len(value))
            assert f.read(len(value) + 2) == value + b"\r\n"
            assert f.readline() == b"END\r\n"
    assert server.poll() is None, procs.describe(server)
    assert "lvlip:" not in tail(server.err_path), procs.describe(server)
    stats = daemon.stats()
    assert stats["TcpPassiveOpens"] >= 2, stats
