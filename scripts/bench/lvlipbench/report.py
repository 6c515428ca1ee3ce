"""The report: the table of figures against the kernel and the targets (rows.py), the details
of every run, the machine and the commands, as markdown; and its section of docs/benchmarks.md."""

import statistics
import time

from .host import loadavg, machine
from .rows import build_rows, retrans_percent
from .settings import DOCS, ECHO_PORTS, HEADING, KERNEL_TAP_IP, PEER_NS, VETH_LOCAL_IP, VETH_PEER_IP


def pinning(bed):
    texts = []
    for mode, cpu in bed.args.modes:
        if cpu is None:
            texts.append(f"{mode}: no taskset, scheduling left to the kernel (how users run it)")
        else:
            texts.append(f"{mode}: lvlipd, every client and every server on CPU {cpu} (`taskset -c {cpu}`)")
    order = ("; each phase runs in both modes, pinned first, and in each mode lvlip is compared with the "
             "kernel veth measured in that same mode" if len(bed.args.modes) > 1 else "")
    return "; ".join(texts) + order


def report(bed, runtime):
    cfg, args = bed.cfg, bed.args
    rows = build_rows(bed)
    modes = [mode for mode, _ in args.modes]
    out = []
    out.append(HEADING)
    out.append("")
    out.append(f"Measured {time.strftime('%Y-%m-%d %H:%M')}{' (--quick)' if args.quick else ''}; "
               f"run time {runtime:.0f} s.")
    out.append("")
    out.append(f"- machine: {machine()}; load average {bed.load_at_start} at the start, {loadavg()} at the end")
    out.append(f"- build: {bed.build_description}")
    out.append(f"- modes: {pinning(bed)}")
    out.append(f"- lvlip: the client under the shim (`scripts/lvlip`), lvlipd over tap0, the server on the "
               f"kernel side of tap0 ({KERNEL_TAP_IP}); kernel: the client in this namespace ({VETH_LOCAL_IP}), the "
               f"server in an `ip netns` peer across a veth pair ({VETH_PEER_IP}), default offloads")
    out.append(f"- bulk: iperf3 -t {cfg['bulk_seconds']}, {cfg['bulk_runs']} run(s) per direction and stack, "
               f"receiver's bits/s; retransmissions: the sender's TcpRetransSegs / TcpOutSegs over the upload "
               f"runs (lvlip: `lvlipctl stat`, kernel: `nstat` in this namespace, before and after each run); "
               f"lvlipd CPU: utime+stime from /proc/PID/stat around the lvlip runs; request/response and "
               f"connection rate: loadgen {cfg['rr_seconds']} s / {cfg['cr_seconds']} s per stack, as "
               f"{2 * cfg['alternations']} equal runs, in {cfg['alternations']} round(s) of the orders "
               f"kernel-lvlip and lvlip-kernel (summed; latency percentiles averaged), "
               f"connections spread over {ECHO_PORTS} server ports")
    out.append("- loss: nftables `numgen random mod 100 < N` on the frames to the receiver, one segment per "
               "frame on both paths (`gso_max_segs 1` on the sender, TSO, GSO and GRO off on the veth pair: "
               "the netdev hooks run before software GSO). Download (the kernel sends to lvlip): `drop` on "
               "veth0 ingress for the kernel; for lvlip, on tap0 egress, `fwd to lvlipsink0` (a veth whose "
               "peer discards them), because a drop in the sender's own egress path is reported to its TCP, "
               "which resends at once without a retransmission. Upload (lvlip sends; `loadgen upload` timed "
               "until the receiver has counted every byte): `drop` on the receiver's ingress, tap0's for "
               "lvlip, veth1's in the peer namespace for the kernel, with lvlipd started `--no-offload` "
               "so that it too writes one segment per frame")
    out.append("")
    if len(modes) > 1:
        head = ["figure"] + [f"{mode}: {col}" if col == "kernel" else col
                             for mode in modes for col in ("kernel", "lvlip", "ratio")] + ["target", "result"]
    else:
        head = ["figure", "kernel", "lvlip", "ratio", "target", "result"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|---|" + "---:|" * (3 * len(modes)) + "---|---|")
    for row in rows:
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    for mode in modes:
        lines = details(bed.by_mode.get(mode, {}))
        if lines:
            out.append(f"Runs, {mode}:" if len(modes) > 1 else "Runs:")
            out.append("")
            out.extend(lines)
    if bed.problems:
        out.append("Problems seen in this run:")
        out.append("")
        for p in bed.problems:
            out.append(f"- {p}")
        out.append("")
    out.append("Commands (inside `unshare --net --pid --fork --kill-child --mount-proc`; `peer:` in "
               f"`ip netns exec {PEER_NS}`; $TMP is the run's temp dir, loadgen is "
               "`cc -O2 scripts/bench/loadgen.c`):")
    out.append("")
    for command in bed.commands:
        out.append(f"    {command}")
    out.append("")
    return "\n".join(out), rows


def transfers(runs):
    texts = []
    for d in runs:
        if not d:
            texts.append("failed")
            continue
        seen, dropped = d.get("frames_seen", 0), d.get("frames_dropped", 0)
        share = f" ({dropped / seen * 100:.1f}%)" if seen else ""
        resent = f", {d['retransmitted']:,} retransmitted" if "retransmitted" in d else ""
        texts.append(f"{d['bytes'] / 1e6:.1f} MB in {d['seconds']:.2f} s, {dropped:,} of {seen:,} frames "
                     f"dropped{share}{resent}")
    return ", ".join(texts)


def details(r):
    """One mode's runs, figure by figure."""
    out = []
    for label, key in (("bulk runs", "bulk"), ("IPv6 bulk runs", "bulk6")):
        parts = []
        for run, values in r.get(key, {}).items():
            if values:
                parts.append(f"{run} {', '.join(f'{v:.2f}' for v in values)}")
        if parts:
            out.append(f"- {label} (Gbit/s): " + "; ".join(parts))
    for name, key in (("request/response", "rr"), ("connection rate", "cr")):
        res = r.get(key, {})
        parts = []
        for stack in ("kernel", "lvlip"):
            d = res.get(stack)
            if d:
                lat = d["latency"]
                extra = f", {d['errors']} errors{' (first: ' + d['first_error'] + ')' if d['errors'] else ''}" \
                    if key == "cr" else ""
                parts.append(f"{stack} {d.get('round_trips', d.get('connections')):,} in {d['seconds']:.1f} s, "
                             f"p50 {lat['p50_us']:.1f} / p90 {lat['p90_us']:.1f} / p99 {lat['p99_us']:.1f} / "
                             f"max {lat['max_us']:.0f} µs{extra}")
        pairs = res.get("pair_ratios") or []
        if len(pairs) > 1:
            parts.append(f"lvlip/kernel within each of the {len(pairs)} pairs of back-to-back runs "
                         f"{min(pairs):.3f}-{max(pairs):.3f} (median {statistics.median(pairs):.3f})")
        if parts:
            out.append(f"- {name}: " + "; ".join(parts))
    conc = r.get("conc", {})
    parts = []
    for stack in ("kernel", "lvlip"):
        d = conc.get(stack)
        if d:
            text = (f"{stack} connected {d['connected']:,} in {d['connect_seconds']:.2f} s, echoed {d['echoed']:,} in "
                    f"{d['echo_seconds']:.2f} s")
            errors = {**d.get("connect_errors", {}), **d.get("echo_errors", {})}
            if errors:
                text += " (errors: " + ", ".join(f"{k} {v}" for k, v in errors.items()) + ")"
            rss = d.get("rss_kb", {})
            if rss:
                text += "; lvlipd RSS " + ", ".join(f"{k} {v / 1024:.1f} MB" for k, v in rss.items())
            parts.append(text)
    if parts:
        out.append("- concurrency: " + "; ".join(parts))
    parts = [f"{stack} {percent}%: {transfers(runs)}" for (stack, percent), runs in r.get("loss", {}).items() if runs]
    if parts:
        out.append("- download under loss: " + "; ".join(parts))
    parts = [f"{stack} {size // 1_000_000} MB {percent}%: {transfers(runs)}"
             for (stack, size, percent), runs in r.get("sendloss", {}).items() if runs]
    if parts:
        out.append("- upload under loss (retransmitted: the sender's TcpRetransSegs): " + "; ".join(parts))
    parts = []
    for stack, counts in r.get("retrans", {}).items():
        share = retrans_percent(counts)
        if share is not None:
            parts.append(f"{stack} {counts['TcpRetransSegs']:,} of {counts['TcpOutSegs']:,} ({share:.3f}%)")
    if parts:
        out.append("- retransmitted segments in the lossless bulk uploads: " + "; ".join(parts))
    cpu = r.get("cpu", {})
    parts = []
    for direction, (seconds, moved) in cpu.items():
        if moved:
            parts.append(f"{direction} {seconds:.2f} s for {moved / 1e9:.2f} GB")
    if parts:
        out.append("- lvlipd CPU (utime+stime from /proc/PID/stat around the lvlip iperf3 runs): " + "; ".join(parts))
    if out:
        out.append("")
    return out


def write_docs(text):
    """Replaces the section with our heading (up to the next `## `), or appends it."""
    original = DOCS.read_text() if DOCS.exists() else "# lvlip benchmarks\n"
    lines = original.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == HEADING), None)
    section = text.rstrip("\n").splitlines()
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += [""] + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = lines[end:]
        lines = lines[:start] + section + ([""] if tail else []) + tail
    DOCS.write_text("\n".join(lines) + "\n")

