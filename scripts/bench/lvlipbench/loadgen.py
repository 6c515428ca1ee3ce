"""scripts/bench/loadgen.c as the phases use it: its echo servers on both sides, a client run
on either stack, and runs of one mode merged into one result."""

import json

from .settings import ECHO_PORT, ECHO_PORTS, KERNEL_TAP_IP, NOFILE, VETH_PEER_IP


def merge_runs(results):
    """One loadgen result from several runs of the same mode: counts and seconds summed (so the
    rate is the overall one), latency percentiles and CDF averaged point by point (quantile
    averaging), the extremes kept."""
    results = [r for r in results if r]
    if not results:
        return None
    if len(results) == 1:
        return results[0]
    merged = dict(results[0])
    count = "round_trips" if "round_trips" in merged else "connections"
    merged[count] = sum(r[count] for r in results)
    merged["seconds"] = sum(r["seconds"] for r in results)
    merged["rate"] = merged[count] / merged["seconds"] if merged["seconds"] else 0.0
    if "errors" in merged:
        merged["errors"] = sum(r.get("errors", 0) for r in results)
        merged["first_error"] = next((r["first_error"] for r in results if r.get("first_error")), "")
    latency = dict(results[0]["latency"])
    for key in latency:
        if key in ("count", "cdf"):
            continue
        values = [r["latency"][key] for r in results]
        latency[key] = max(values) if key == "max_us" else min(values) if key == "min_us" else sum(values) / len(values)
    latency["count"] = sum(r["latency"].get("count", 0) for r in results)
    cdfs = [r["latency"].get("cdf", []) for r in results]
    if all(len(c) == len(cdfs[0]) for c in cdfs):
        latency["cdf"] = [[cdfs[0][i][0], sum(c[i][1] for c in cdfs) / len(cdfs)] for i in range(len(cdfs[0]))]
    merged["latency"] = latency
    merged["runs"] = len(results)
    if all("daemon_cpu_seconds" in r for r in results):
        merged["daemon_cpu_seconds"] = sum(r["daemon_cpu_seconds"] for r in results)
    return merged


def start_echo_servers(bed):
    for peer, address in ((False, KERNEL_TAP_IP), (True, VETH_PEER_IP)):
        bed.start(f"echo server{' (peer)' if peer else ''}",
                  ["prlimit", f"--nofile={NOFILE}:{NOFILE}", bed.loadgen, "server", address, ECHO_PORT, ECHO_PORTS],
                  peer=peer)
    bed.wait_listening(ECHO_PORT)
    bed.wait_listening(ECHO_PORT + ECHO_PORTS - 1)
    bed.wait_listening(ECHO_PORT, peer=True)
    bed.wait_listening(ECHO_PORT + ECHO_PORTS - 1, peer=True)


def loadgen_client(bed, stack, mode, *args, timeout):
    target = KERNEL_TAP_IP if stack == "lvlip" else VETH_PEER_IP
    command = ["prlimit", f"--nofile={NOFILE}:{NOFILE}", bed.loadgen, mode, target, ECHO_PORT, *args]
    code, out, err = bed.run(f"loadgen {mode} {stack}", command, timeout=timeout, stack=stack == "lvlip")
    try:
        result = json.loads(out)
    except ValueError:
        bed.problem(f"loadgen {mode} ({stack}): exit {code}, no result; stderr: {err.strip()[-300:]}")
        return None
    if code != 0:
        bed.problem(f"loadgen {mode} ({stack}): exit {code}; stderr: {err.strip()[-300:]}")
    return result


def alternating(bed, mode, seconds, *args, what):
    """`seconds` per stack in 2 x `alternations` runs, in rounds of the orders kernel-lvlip and
    lvlip-kernel; the figures are their sums. Whichever runs second meets what the first left
    behind (after a connection-rate run, tens of thousands of TIME-WAIT sockets: measured 7-10%
    fewer connections/s for the stack that ran second), so each stack takes each place equally
    often. Short runs, interleaved, because the machine's own speed moves by 20-40% within
    seconds (a 2-CPU VM: the kernel's connection rate measured 22,281-37,903/s in consecutive
    2 s runs): with two runs per stack one slow spell decided the ratio."""
    runs = {"kernel": [], "lvlip": []}
    rounds = bed.cfg["alternations"]
    total = 2 * rounds
    length = f"{seconds / total:g}"
    for _ in range(rounds):
        for order in (("kernel", "lvlip"), ("lvlip", "kernel")):
            for stack in order:
                bed.progress.set(f"{what}, {stack} (run {len(runs[stack]) + 1}/{total}, {length} s)")
                before = bed.daemon_cpu_seconds() if stack == "lvlip" else 0
                result = loadgen_client(bed, stack, mode, length, *args, timeout=seconds + 60)
                if result and stack == "lvlip" and bed.daemon.poll() is None:
                    # lvlipd's CPU (utime+stime) over the run, busy polling included.
                    result["daemon_cpu_seconds"] = bed.daemon_cpu_seconds() - before
                runs[stack].append(result)
    merged = {stack: merge_runs(results) for stack, results in runs.items()}
    # The ratio within each pair of adjacent runs (one of each stack, back to back): how far
    # the machine's moods move the figure the sums give.
    merged["pair_ratios"] = [s["rate"] / k["rate"] for k, s in zip(runs["kernel"], runs["lvlip"])
                             if k and s and k.get("rate")]
    return merged
