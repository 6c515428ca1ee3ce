"""Inside the namespaces: sets the testbed up, runs the phases asked for, each in every mode
asked for (pinned, then not pinned, so that the two figures of a phase are measured minutes
apart), tears it down, then prints the report and, for a full run, writes it into
docs/benchmarks.md with its chart."""

import signal
import subprocess
import sys
import time

from . import bulk, chart, concurrency, connrate, loss, rr, sendloss
from .report import report, write_docs
from .settings import CHART, DOCS, REPO
from .testbed import Testbed

# (name in problems, --only key, phase), in the order they run.
PHASES = (("bulk", "bulk", bulk.run), ("request/response", "rr", rr.run),
          ("connection rate", "connrate", connrate.run), ("concurrency", "concurrency", concurrency.run),
          ("loss", "loss", loss.run), ("sender under loss", "sendloss", sendloss.run),
          ("IPv6 bulk", "bulk6", bulk.run_ipv6))


def measure(bed):
    for name, key, phase in PHASES:
        if bed.args.only and key not in bed.args.only:
            continue
        for mode, cpu in bed.args.modes:
            bed.use_mode(mode, cpu)
            try:
                phase(bed)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
                bed.problem(f"{name} phase failed: {error}")
                bed.stop_all()
                bed.stop_daemon()
                bed.restore_links()


def inner(args):
    bed = Testbed(args)

    def stop(signo, _frame):
        raise SystemExit(128 + signo)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    started = time.monotonic()
    try:
        bed.setup()
        measure(bed)
    finally:
        bed.teardown()
    runtime = time.monotonic() - started
    text, _rows = report(bed, runtime)
    print(text)
    if not args.no_docs:
        write_docs(text)
        chart.draw(bed)
        print(f"wrote {DOCS.relative_to(REPO)} and {CHART.relative_to(REPO)}", file=sys.stderr)
