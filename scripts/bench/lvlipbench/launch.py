"""Outside the namespaces: checks the tools, finds the build, then runs the benchmark again
inside `unshare --net --pid --fork --kill-child --mount-proc`, where everything it creates
lives and dies."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .settings import INNER, REPO


def fail(message):
    print(f"\nthroughput: error: {message}", file=sys.stderr)
    sys.exit(1)


def outer(args, script):
    """Checks the tools, installs matplotlib if the chart needs it (the private namespace has
    no network), finds the binaries, then re-executes inside private namespaces."""
    if os.geteuid() != 0:
        fail("run as root (it creates namespaces, a TAP and a veth pair, all private to this run)")
    # What a fresh machine lacks (iperf3, nftables, ethtool, cc, matplotlib) comes from the
    # project's own installer, before entering the namespace (which has no network).
    subprocess.run([str(REPO / "scripts" / "install-deps")], check=False)
    for tool in ("unshare", "ip", "nft", "nstat", "iperf3", "taskset", "prlimit", "ethtool", "cc", "mount"):
        if shutil.which(tool) is None:
            fail(f"{tool} is not installed (scripts/install-deps)")
    if not args.no_docs:
        probe = subprocess.run([sys.executable, "-c", "import matplotlib"], capture_output=True)
        if probe.returncode != 0:
            print("throughput: installing matplotlib", file=sys.stderr)
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=False)
            if subprocess.run([sys.executable, "-c", "import matplotlib"], capture_output=True).returncode != 0:
                fail("matplotlib is missing and could not be installed (or use --no-docs)")
    bin_dir = os.environ.get("LVLIP_BIN")
    if not bin_dir:
        shown = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=REPO,
                               capture_output=True, text=True, timeout=120)
        if shown.returncode != 0:
            fail(f"cannot find the release build: {shown.stderr.strip()}")
        bin_dir = shown.stdout.strip()
    for name in ("lvlipd", "liblvlip.so", "lvlipctl"):
        if not (Path(bin_dir) / name).is_file():
            fail(f"no {name} in {bin_dir}: build first (scripts/build) or set LVLIP_BIN")
    env = {**os.environ, INNER: "1", "LVLIP_BIN": str(Path(bin_dir).resolve())}
    command = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc",
               sys.executable, str(script), *sys.argv[1:]]
    os.execvpe(command[0], command, env)

