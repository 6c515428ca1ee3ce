"""`lvlip PROGRAM`: what the wrapper and the shim say when a program's sockets cannot be lvlip's,
instead of letting it run on the kernel's stack without a word."""

import subprocess
import sys
import textwrap

from processes import bounded


def test_statically_linked_program_is_refused(daemon, workdir):
    """A static program has no dynamic loader to preload the shim into."""
    source = workdir / "static.c"
    marker = workdir / "ran"
    source.write_text(textwrap.dedent(f"""
        #include <stdio.h>
        int main(void) {{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); return 0; }}
    """))
    for flag in ("-static", "-static-pie"):
        program = workdir / f"static{flag}"
        subprocess.run(["cc", flag, "-O1", "-o", program, source], check=True, timeout=60)
        result = bounded(daemon.lvlip(program), timeout=10, stack=daemon)
        assert result.returncode == 126, result
        assert f"lvlip: {program} is statically linked; LD_PRELOAD cannot intercept its sockets" in result.stderr, result
        assert not marker.exists(), "the static program ran"
    # The same source linked dynamically runs.
    dynamic = workdir / "dynamic"
    subprocess.run(["cc", "-O1", "-o", dynamic, source], check=True, timeout=60)
    result = bounded(daemon.lvlip(dynamic), timeout=10, stack=daemon)
    assert result.returncode == 0 and result.stderr == "", result
    assert marker.exists()


UNSERVED = """
import socket
for _ in range(3):
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
    except OSError as error:
        print("refused", error)
print("done")
"""


def test_unserved_socket_kind_is_named_once(daemon):
    """A raw IP socket goes to the kernel's stack, and the program's stderr says so, once."""
    result = bounded([sys.executable, "-c", UNSERVED], timeout=20, stack=daemon)
    assert result.returncode == 0 and "done" in result.stdout, result
    lines = [line for line in result.stderr.splitlines() if line.startswith("lvlip:")]
    assert lines == ["lvlip: AF_INET SOCK_RAW sockets with protocol 17 are not served by lvlip: "
                     "this one uses the kernel's network stack"], result.stderr
