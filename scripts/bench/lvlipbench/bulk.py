"""Phase 1: bulk throughput with iperf3, upload and download; lvlipd's CPU seconds per GB
moved each way; the retransmission rate of the (lossless) uploads, lvlip's and the kernel's.
Phase 7 (bulk6): the same transfers over IPv6, throughput only."""

import json

from .settings import IPERF_PORT, KERNEL_TAP_IP, KERNEL_TAP_IP6, VETH_PEER_IP, VETH_PEER_IP6


def run_ipv6(bed):
    run(bed, ipv6=True)


def run(bed, ipv6=False):
    cfg = bed.cfg
    tap_ip, peer_ip = (KERNEL_TAP_IP6, VETH_PEER_IP6) if ipv6 else (KERNEL_TAP_IP, VETH_PEER_IP)
    phase = "7/7 bulk iperf3 over IPv6" if ipv6 else "1/7 bulk iperf3"
    bed.start_daemon(ipv6=ipv6)
    if ipv6:
        bed.enable_veth_ipv6()
    bed.start("iperf3 server (tap)", ["iperf3", "-s", "-B", tap_ip, "-p", IPERF_PORT])
    bed.start("iperf3 server (peer)", ["iperf3", "-s", "-B", peer_ip, "-p", IPERF_PORT], peer=True)
    bed.wait_listening(IPERF_PORT, ipv6=ipv6)
    bed.wait_listening(IPERF_PORT, peer=True, ipv6=ipv6)
    bed.warm_up(ipv6=ipv6)
    rates = {(stack, d): [] for stack in ("kernel", "lvlip") for d in ("upload", "download")}
    cpu = {"upload": [0.0, 0], "download": [0.0, 0]}  # seconds, bytes
    # The sender's TcpRetransSegs and TcpOutSegs summed over the upload runs.
    retrans = {stack: {"TcpRetransSegs": 0, "TcpOutSegs": 0} for stack in ("kernel", "lvlip")}
    for run in range(cfg["bulk_runs"]):
        for direction in ("upload", "download"):
            for stack in ("kernel", "lvlip"):
                bed.progress.set(f"{phase}: {stack} {direction}, run {run + 1}/{cfg['bulk_runs']} "
                                 f"({cfg['bulk_seconds']} s)")
                target = peer_ip if stack == "kernel" else tap_ip
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
    if ipv6:
        bed.restore_links()
        bed.results["bulk6"] = {f"{s} {d}": v for (s, d), v in rates.items()}
        return
    bed.results["bulk"] = {f"{s} {d}": v for (s, d), v in rates.items()}
    bed.results["cpu"] = cpu
    bed.results["retrans"] = retrans
