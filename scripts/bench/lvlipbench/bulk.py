"""Phase 1: bulk throughput with iperf3, upload and download; lvlipd's CPU seconds per GB
moved each way; the retransmission rate of the (lossless) uploads, lvlip's and the kernel's."""

import json

from .settings import IPERF_PORT, KERNEL_TAP_IP, VETH_PEER_IP


def run(bed):
    cfg = bed.cfg
    bed.start_daemon()
    bed.start("iperf3 server (tap)", ["iperf3", "-s", "-B", KERNEL_TAP_IP, "-p", IPERF_PORT])
    bed.start("iperf3 server (peer)", ["iperf3", "-s", "-B", VETH_PEER_IP, "-p", IPERF_PORT], peer=True)
    bed.wait_listening(IPERF_PORT)
    bed.wait_listening(IPERF_PORT, peer=True)
    bed.warm_up()
    rates = {(stack, d): [] for stack in ("kernel", "lvlip") for d in ("upload", "download")}
    cpu = {"upload": [0.0, 0], "download": [0.0, 0]}  # seconds, bytes
    # The sender's TcpRetransSegs and TcpOutSegs summed over the upload runs.
    retrans = {stack: {"TcpRetransSegs": 0, "TcpOutSegs": 0} for stack in ("kernel", "lvlip")}
    for run in range(cfg["bulk_runs"]):
        for direction in ("upload", "download"):
            for stack in ("kernel", "lvlip"):
                bed.progress.set(f"1/6 bulk iperf3: {stack} {direction}, run {run + 1}/{cfg['bulk_runs']} "
                                 f"({cfg['bulk_seconds']} s)")
                target = VETH_PEER_IP if stack == "kernel" else KERNEL_TAP_IP
                command = ["iperf3", "-c", target, "-p", IPERF_PORT, "-t", cfg["bulk_seconds"], "-J"]
                if direction == "download":
                    command.append("-R")
                before = bed.daemon_cpu_seconds() if stack == "lvlip" else 0
                counted = bed.tcp_counters(stack) if direction == "upload" else None
                code, out, err = bed.run(f"iperf3 {stack} {direction}", command,
                                         timeout=cfg["bulk_seconds"] + 30, stack=stack == "lvlip")
                alive = stack == "kernel" or bed.daemon_alive("iperf3")
                after = bed.daemon_cpu_seconds() if stack == "lvlip" and alive else before
                if counted and alive:
                    for key, value in bed.tcp_counters(stack).items():
                        retrans[stack][key] += value - counted[key]
                try:
                    report = json.loads(out)
                    if "error" in report:
                        raise ValueError(report["error"])
                    received = report["end"]["sum_received"]
                except (ValueError, KeyError) as error:
                    bed.problem(f"iperf3 {stack} {direction} run {run + 1}: exit {code}, {error}; "
                                f"stderr: {err.strip()[-300:]}")
                    continue
                rates[(stack, direction)].append(received["bits_per_second"] / 1e9)
                if stack == "lvlip":
                    cpu[direction][0] += after - before
                    cpu[direction][1] += received["bytes"]
    bed.stop_all()
    bed.stop_daemon()
    bed.results["bulk"] = {f"{s} {d}": v for (s, d), v in rates.items()}
    bed.results["cpu"] = cpu
    bed.results["retrans"] = retrans
