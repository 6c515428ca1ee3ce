"""The tests' reading of lvlip_ipc.h (ipc_wire.py) agrees with the C compiler's: every struct's
size and every field's offset, and the constants the fuzzer uses."""
import os
import subprocess
import tempfile

import ipc_wire as W


def test_struct_layouts_match_the_c_compiler():
    lines = ['#include <stddef.h>', '#include <stdio.h>', '#include "lvlip_ipc.h"', "int main(void) {"]
    expected = []
    for name in W.STRUCTS:
        lines.append(f'    printf("%zu\\n", sizeof(struct {name}));')
        expected.append(W.size(name))
        for field in W.fields(name):
            lines.append(f'    printf("%zu\\n", offsetof(struct {name}, {field}));')
            expected.append(W.offset(name, field))
    for name in ("LVLIP_IPC_MAGIC", "LVLIP_IPC_VERSION", "LVLIP_IPC_MAX_BODY", "LVLIP_MSG_SOCKET",
                 "LVLIP_MSG_STATUS", "LVLIP_FLAG_FD", "LVLIP_FLAG_NO_REPLY", "LVLIP_DGRAM_MAGIC", "LVLIP_ACCEPT_MAGIC"):
        lines.append(f'    printf("%llu\\n", (unsigned long long)({name}));')
        expected.append(W.const(name))
    lines.append("    return 0;\n}\n")
    with tempfile.TemporaryDirectory() as directory:
        source = os.path.join(directory, "layout.c")
        binary = os.path.join(directory, "layout")
        with open(source, "w") as f:
            f.write("\n".join(lines))
        subprocess.run(["cc", "-std=gnu11", "-Wall", "-I", os.path.dirname(W.HEADER), "-o", binary, source],
                       check=True, timeout=60)
        printed = [int(line) for line in subprocess.run([binary], check=True, capture_output=True, text=True,
                                                        timeout=10).stdout.split()]
    assert printed == expected
    assert len(expected) > 80
