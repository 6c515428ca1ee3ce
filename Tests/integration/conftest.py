"""Fixtures for the lvlipd integration tests.

Run them only as scripts/test does:
    LVLIP_BIN=<dir> unshare --net --pid --fork --kill-child --mount-proc \
        python3 -m pytest -q -p no:cacheprovider Tests/integration
so that tap0, its addresses and every process die with the namespace.
"""

import os

import pytest

import harness
from processes import Processes


def pytest_configure(config):
    # Networking safety (docs: DESIGN.md): refuse to touch a namespace we did not create.
    # A fresh `unshare --net` namespace holds only lo; the host's holds real interfaces.
    if os.geteuid() != 0:
        pytest.exit("the integration tests need root inside a private namespace (see scripts/test)", returncode=2)
    names = harness.interfaces()
    if names != ["lo"]:
        pytest.exit(f"refusing to run: this network namespace already has interfaces {names}; run under "
                    "`unshare --net --pid --fork --kill-child --mount-proc` (see scripts/test)", returncode=2)
    if not os.environ.get("LVLIP_BIN"):
        pytest.exit("set LVLIP_BIN to the directory holding lvlipd and lvlipctl (see scripts/test)", returncode=2)
    for tool in ("lvlipd", "lvlipctl", "liblvlip.so"):
        if not (harness.bin_dir() / tool).is_file():
            pytest.exit(f"{tool} not found in LVLIP_BIN={harness.bin_dir()}", returncode=2)
    harness.run(["ip", "link", "set", "lo", "up"], check=True)


@pytest.fixture
def workdir(tmp_path_factory):
    # A short path: Unix socket paths are limited to 108 bytes.
    path = tmp_path_factory.mktemp("lvlipd")
    if len(str(path)) > 80:
        pytest.fail(f"temporary directory path too long for a Unix socket: {path}")
    return path


@pytest.fixture
def start_daemon(workdir, request):
    """A factory starting lvlipd; each daemon is stopped with SIGTERM at teardown, which must
    exit 0. Its stderr is printed when the test fails."""
    daemons = []

    def start(*extra_args, **kwargs):
        daemon = harness.Daemon(workdir, extra_args=extra_args, **kwargs)
        daemons.append(daemon)
        return daemon

    yield start

    failures = []
    for daemon in daemons:
        if daemon.killed:
            continue
        try:
            status = daemon.terminate()
        except AssertionError as error:
            failures.append(str(error))
            continue
        if status != 0:
            failures.append(f"lvlipd (pid {daemon.pid}) exited {status}")
        if os.path.exists(daemon.socket) and status == 0:
            failures.append(f"lvlipd left its socket {daemon.socket} behind")
    report = getattr(request.node, "rep_call", None)
    if failures or (report is not None and report.failed):
        for daemon in daemons:
            print(f"--- lvlipd pid {daemon.pid} stderr ---\n{daemon.stderr()}")
    assert not failures, "; ".join(failures)


@pytest.fixture
def daemon(start_daemon):
    """lvlipd on tap0 as 10.0.0.4/24, kernel side 10.0.0.5/24, IPv6 off on the kernel side."""
    return start_daemon()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)



@pytest.fixture
def procs_for(start_daemon, workdir, request):
    """A factory of Processes (processes.py) for a daemon the test started with options of its
    own. Depends on start_daemon so that the processes are killed before the daemons stop."""
    made = []

    def processes_of(daemon):
        made.append(Processes(workdir, daemon))
        return made[-1]

    yield processes_of
    report = getattr(request.node, "rep_call", None)
    for processes in made:
        processes.cleanup(report is not None and report.failed)


@pytest.fixture
def procs(daemon, procs_for):
    """Background processes of one test, on the default daemon (processes.Processes)."""
    return procs_for(daemon)
