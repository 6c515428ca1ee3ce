"""The report: the table of figures against the kernel and the targets, the details of every
run, the machine and the commands, as markdown; and its section of docs/benchmarks.md."""

import math
import statistics
import time

from .host import loadavg, machine
from .settings import DOCS, ECHO_PORTS, HEADING, KERNEL_TAP_IP, LOSSES, PEER_NS, TARGETS, VETH_LOCAL_IP, VETH_PEER_IP


def fmt(value, digits=2):
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio_of(lvlip, kernel):
    if lvlip is None or kernel is None or kernel == 0:
        return None
    return lvlip / kernel


def ratio_text(q):
    # Three significant digits: a ratio just under a target must not print as the target.
    return "—" if q is None else f"{q:.3g}x"


def verdict(ok):
    if ok is None:
        return "MISS (no result)"
    return "PASS" if ok else "MISS"


def median_or_none(values):
    return statistics.median(values) if values else None


def median_run(runs):
    """The run of median time; an incomplete or failed run counts as the slowest."""
    if not runs:
        return None
    ordered = sorted(runs, key=lambda d: d["seconds"] if d and d.get("complete") else math.inf)
    return ordered[(len(ordered) - 1) // 2]


def build_rows(bed):
    r = bed.results
    rows = []  # (figure, kernel, lvlip, ratio, target, result)

    bulk = r.get("bulk", {})
    for direction, target in (("upload", TARGETS["upload"]), ("download", TARGETS["download"])):
        k, s = median_or_none(bulk.get(f"kernel {direction}", [])), median_or_none(bulk.get(f"lvlip {direction}", []))
        q = ratio_of(s, k)
        rows.append((f"bulk {direction}, iperf3 (Gbit/s, median)", fmt(k), fmt(s), ratio_text(q),
                     f">= {target}x", verdict(None if q is None else q >= target)))

    rr = r.get("rr", {})
    k, s = rr.get("kernel"), rr.get("lvlip")
    krate, srate = (k or {}).get("rate"), (s or {}).get("rate")
    q = ratio_of(srate, krate)
    rows.append(("request/response, 64 B ping-pong (round trips/s)", fmt(krate), fmt(srate),
                 ratio_text(q), "—", "—"))
    for name, key, target in (("p50", "p50_us", TARGETS["rr_p50"]), ("p99", "p99_us", None)):
        kv = (k or {}).get("latency", {}).get(key)
        sv = (s or {}).get("latency", {}).get(key)
        q = ratio_of(sv, kv)
        rows.append((f"request/response latency {name} (µs)", fmt(kv, 1), fmt(sv, 1), ratio_text(q),
                     f"<= {target}x" if target else "—",
                     verdict(None if q is None else q <= target) if target else "—"))

    cr = r.get("cr", {})
    kv, sv = (cr.get("kernel") or {}).get("rate"), (cr.get("lvlip") or {}).get("rate")
    q = ratio_of(sv, kv)
    rows.append(("connection rate (connections/s)", fmt(kv, 0), fmt(sv, 0), ratio_text(q),
                 f">= {TARGETS['connrate']}x", verdict(None if q is None else q >= TARGETS["connrate"])))

    conc = r.get("conc", {})
    count = bed.cfg["concurrent"]

    def served(res):
        if not res:
            return None, "failed"
        return res.get("echoed", 0), f"{res.get('echoed', 0):,}/{count:,}"

    kn, ktext = served(conc.get("kernel"))
    sn, stext = served(conc.get("lvlip"))
    rows.append((f"{count:,} concurrent connections, each echoed once", ktext, stext, "—", f"all {count:,}",
                 verdict(None if sn is None else sn == count)))
    per_idle = per_echo = None
    rss = (conc.get("lvlip") or {}).get("rss_kb", {})
    if "before" in rss and "idle" in rss:
        per_idle = (rss["idle"] - rss["before"]) / count
    if "before" in rss and "echoed" in rss:
        per_echo = (rss["echoed"] - rss["before"]) / count
    rows.append(("lvlipd RSS per idle connection (KB)", "n/a", fmt(per_idle, 1), "—", f"<= {TARGETS['rss_kb']} KB",
                 verdict(None if per_idle is None else per_idle <= TARGETS["rss_kb"] and sn == count)))
    rows.append(("lvlipd RSS per connection after its echo (KB)", "n/a", fmt(per_echo, 1), "—", "—", "—"))

    loss = r.get("loss", {})
    for percent in LOSSES:
        k, s = median_run(loss.get(("kernel", percent))), median_run(loss.get(("lvlip", percent)))

        def goodput(res):
            if not res or not res.get("complete"):
                return None, "incomplete" if res else "failed"
            return res["mbit_per_s"], f"{res['mbit_per_s']:,.0f} ({res['seconds']:.2f} s)"

        kv, kt = goodput(k)
        sv, st = goodput(s)
        q = ratio_of(sv, kv)
        mb = bed.cfg["loss_bytes"] // 1_000_000
        rows.append((f"goodput, {mb} MB download at {percent}% loss (Mbit/s, time; median run)", kt, st,
                     ratio_text(q), f">= {TARGETS['loss']}x",
                     verdict(None if q is None else q >= TARGETS["loss"])))

    cpu = r.get("cpu", {})
    for direction in ("upload", "download"):
        seconds, moved = cpu.get(direction, (0, 0))
        value = seconds / (moved / 1e9) if moved else None
        rows.append((f"lvlipd CPU seconds per GB, bulk {direction}", "n/a", fmt(value, 2), "—", "—", "—"))
    return rows


def report(bed, runtime):
    cfg, args = bed.cfg, bed.args
    rows = build_rows(bed)
    out = []
    out.append(HEADING)
    out.append("")
    out.append(f"Measured {time.strftime('%Y-%m-%d %H:%M')}{' (--quick)' if args.quick else ''}; "
               f"run time {runtime:.0f} s.")
    out.append("")
    out.append(f"- machine: {machine()}; load average {bed.load_at_start} at the start, {loadavg()} at the end")
    out.append(f"- build: {bed.build_description}")
    pin = ("not pinned" if args.cpu == "none" else
           f"lvlipd, every client and every server pinned to CPU {args.cpu} (`taskset -c {args.cpu}`), "
           f"the same for lvlip and the kernel veth")
    out.append(f"- pinning: {pin}")
    out.append(f"- lvlip: the client under the shim (`scripts/lvlip`), lvlipd over tap0, the server on the "
               f"kernel side of tap0 ({KERNEL_TAP_IP}); kernel: the client in this namespace ({VETH_LOCAL_IP}), the "
               f"server in an `ip netns` peer across a veth pair ({VETH_PEER_IP}), default offloads")
    out.append(f"- bulk: iperf3 -t {cfg['bulk_seconds']}, {cfg['bulk_runs']} run(s) per direction and stack, "
               f"receiver's bits/s; request/response and connection rate: loadgen {cfg['rr_seconds']} s / "
               f"{cfg['cr_seconds']} s per stack, as two runs of half that in the orders kernel-lvlip and "
               f"lvlip-kernel (summed; latency percentiles averaged), connections spread over {ECHO_PORTS} "
               f"server ports")
    out.append("- loss: nftables `numgen random mod 100 < N` on the frames to the receiver: `drop` on veth0 "
               "ingress for the kernel; for lvlip, on tap0 egress, `fwd to lvlipsink0` (a veth whose peer "
               "discards them), because a drop in the sender's own egress path is reported to its TCP, which "
               "resends at once without a retransmission (lvlip's loss figures measured with `drop` there, "
               "before 2026-11-22, were not losses). `gso_max_segs 1` on the sender and GRO off on the veth "
               "so that a lost frame is one segment on both paths (the netdev hooks run before software GSO)")
    out.append("")
    out.append("| figure | kernel | lvlip | ratio | target | result |")
    out.append("|---|---:|---:|---:|---|---|")
    for row in rows:
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    out.extend(details(bed))
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


def details(bed):
    r = bed.results
    out = []
    bulk = r.get("bulk", {})
    if bulk:
        parts = []
        for key, values in bulk.items():
            if values:
                parts.append(f"{key} {', '.join(f'{v:.2f}' for v in values)}")
        out.append("- bulk runs (Gbit/s): " + "; ".join(parts))
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
    loss = r.get("loss", {})
    parts = []
    for (stack, percent), runs in loss.items():
        texts = []
        for d in runs:
            if not d:
                texts.append("failed")
                continue
            seen, dropped = d.get("frames_seen", 0), d.get("frames_dropped", 0)
            share = f" ({dropped / seen * 100:.1f}%)" if seen else ""
            texts.append(f"{d['bytes'] / 1e6:.1f} MB in {d['seconds']:.2f} s, {dropped:,} of {seen:,} frames "
                         f"dropped{share}")
        if texts:
            parts.append(f"{stack} {percent}%: " + ", ".join(texts))
    if parts:
        out.append("- loss: " + "; ".join(parts))
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

