"""What the benchmark measures with: addresses, ports, sizes, targets, the command line, and
the durations of a full or a --quick run."""

import argparse
import os
import resource
from pathlib import Path

INNER = "LVLIP_BENCH_INNER"
REPO = Path(__file__).resolve().parents[3]
HEADING = "## Throughput, latency and concurrency (`scripts/bench/throughput`)"
DOCS = REPO / "docs" / "benchmarks.md"
CHART = REPO / "docs" / "bench-throughput.png"
STACK_IP, KERNEL_TAP_IP = "10.0.0.4", "10.0.0.5"
VETH_LOCAL_IP, VETH_PEER_IP = "10.0.1.1", "10.0.1.2"
PEER_NS = "lvlip-bench-peer"
IPERF_PORT, ECHO_PORT, ECHO_PORTS, SOURCE_PORT = 5201, 7000, 16, 7100
CONCURRENT = 10_000
# Descriptors for the clients and servers of the concurrency test: up to 65536, within the
# hard limit (raising that needs CAP_SYS_RESOURCE, which root in a container may lack).
_HARD_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
NOFILE = 65536 if _HARD_NOFILE == resource.RLIM_INFINITY else min(65536, _HARD_NOFILE)
TARGETS = {  # lvlip/kernel ratios (the RSS target is absolute)
    "download": 0.25, "upload": 0.10, "rr_p50": 2.5, "connrate": 0.3, "rss_kb": 64, "loss": 0.8,
}
LOSSES = (1, 5)
# Loss rounds after the first start only while the run is younger than this, so that slow
# recovery cannot push the whole benchmark past ten minutes.
LOSS_ROUND_BUDGET = 420
PHASES = ("bulk", "rr", "connrate", "concurrency", "loss")


def parse_args(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: short durations, one run each, smaller transfers")
    parser.add_argument("--no-docs", action="store_true",
                        help="print only: do not write docs/benchmarks.md or docs/bench-throughput.png")
    parser.add_argument("--cpu", default="0",
                        help="pin lvlipd, every client and every server to this CPU with taskset, the same "
                             "for lvlip and the kernel (default 0; 'none' leaves scheduling to the kernel)")
    parser.add_argument("--only", choices=PHASES, action="append",
                        help="run only this phase (repeatable); implies --no-docs, since the page shows "
                             "every figure")
    args = parser.parse_args()
    if args.only:
        args.no_docs = True
    if args.cpu != "none" and not (args.cpu.isdigit() and int(args.cpu) < (os.cpu_count() or 1)):
        parser.error(f"--cpu must be a CPU number below {os.cpu_count()} or 'none'")
    return args


def settings(args):
    if args.quick:
        return {"bulk_seconds": 3, "bulk_runs": 1, "rr_seconds": 3, "cr_seconds": 3,
                "concurrent": CONCURRENT, "loss_bytes": 10_000_000, "loss_runs": 1, "loss_timeout": 60}
    return {"bulk_seconds": 10, "bulk_runs": 3, "rr_seconds": 10, "cr_seconds": 10,
            "concurrent": CONCURRENT, "loss_bytes": 50_000_000, "loss_runs": 3, "loss_timeout": 60}

