"""The figures of the report's table, one mode at a time, and the targets they are judged
against (settings.TARGETS: each judged only in the modes the issue sets it for)."""

import math
import statistics

from .settings import LOSSES, RETRANS_GOAL, TARGETS


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


def median_or_none(values):
    return statistics.median(values) if values else None


def median_run(runs):
    """The run of median time; an incomplete or failed run counts as the slowest."""
    if not runs:
        return None
    ordered = sorted(runs, key=lambda d: d["seconds"] if d and d.get("complete") else math.inf)
    return ordered[(len(ordered) - 1) // 2]


def cpu_share(result):
    """lvlipd's CPU over a loadgen result's runs, in % of one CPU; None if not measured."""
    if not result or "daemon_cpu_seconds" not in result or not result.get("seconds"):
        return None
    return 100 * result["daemon_cpu_seconds"] / result["seconds"]


def at_least(value, key):
    return None if value is None else value >= TARGETS[key][0]


def at_most(value, key):
    return None if value is None else value <= TARGETS[key][0]


def goodput(res):
    """(Mbit/s, cell text) of a transfer's median run."""
    if not res or not res.get("complete"):
        return None, "incomplete" if res else "failed"
    return res["mbit_per_s"], f"{res['mbit_per_s']:,.0f} ({res['seconds']:.2f} s)"


def retrans_percent(counts):
    if not counts or not counts.get("TcpOutSegs"):
        return None
    return counts["TcpRetransSegs"] / counts["TcpOutSegs"] * 100


def cpu_per_gb(cpu, direction):
    seconds, moved = cpu.get(direction, (0, 0))
    return seconds / (moved / 1e9) if moved else None


def mode_rows(r, cfg):
    """The rows of one mode's results: (phase, figure, target key or None, kernel, lvlip,
    ratio, passed), where passed is True, False or None (no result) for a target, and is
    ignored without one. The same figures in the same order whatever the results hold."""
    rows = []

    bulk = r.get("bulk", {})
    for direction in ("upload", "download"):
        k, s = median_or_none(bulk.get(f"kernel {direction}", [])), median_or_none(bulk.get(f"lvlip {direction}", []))
        q = ratio_of(s, k)
        rows.append(("bulk", f"bulk {direction}, iperf3 (Gbit/s, median)", direction, fmt(k), fmt(s), ratio_text(q),
                     at_least(q, direction)))
    bulk6 = r.get("bulk6", {})
    for direction in ("upload", "download"):
        k = median_or_none(bulk6.get(f"kernel {direction}", []))
        s = median_or_none(bulk6.get(f"lvlip {direction}", []))
        rows.append(("bulk6", f"IPv6 bulk {direction}, iperf3 (Gbit/s, median)", None, fmt(k), fmt(s),
                     ratio_text(ratio_of(s, k)), None))
    retrans = r.get("retrans", {})
    k, s = retrans_percent(retrans.get("kernel")), retrans_percent(retrans.get("lvlip"))
    rows.append(("bulk", "retransmitted segments in the bulk uploads (% of segments sent)", "retrans",
                 "—" if k is None else f"{k:.3f}%", "—" if s is None else f"{s:.3f}%", "—",
                 at_most(s, "retrans")))

    rr = r.get("rr", {})
    k, s = rr.get("kernel"), rr.get("lvlip")
    krate, srate = (k or {}).get("rate"), (s or {}).get("rate")
    rows.append(("rr", "request/response, 64 B ping-pong (round trips/s)", None, fmt(krate), fmt(srate),
                 ratio_text(ratio_of(srate, krate)), None))
    for name, key, target in (("p50", "p50_us", "rr_p50"), ("p99", "p99_us", None)):
        kv = (k or {}).get("latency", {}).get(key)
        sv = (s or {}).get("latency", {}).get(key)
        q = ratio_of(sv, kv)
        rows.append(("rr", f"request/response latency {name} (µs)", target, fmt(kv, 1), fmt(sv, 1), ratio_text(q),
                     at_most(q, target) if target else None))
    rows.append(("rr", "lvlipd CPU during request/response (% of one CPU)", None, "n/a", fmt(cpu_share(s), 0), "—", None))

    cr = r.get("cr", {})
    kv, sv = (cr.get("kernel") or {}).get("rate"), (cr.get("lvlip") or {}).get("rate")
    q = ratio_of(sv, kv)
    rows.append(("connrate", "connection rate (connections/s)", "connrate", fmt(kv, 0), fmt(sv, 0), ratio_text(q),
                 at_least(q, "connrate")))
    rows.append(("connrate", "lvlipd CPU during the connection rate runs (% of one CPU)", None, "n/a",
                 fmt(cpu_share(cr.get("lvlip")), 0), "—", None))

    conc = r.get("conc", {})
    count = cfg["concurrent"]

    def served(res):
        if not res:
            return None, "failed"
        return res.get("echoed", 0), f"{res.get('echoed', 0):,}/{count:,}"

    _, ktext = served(conc.get("kernel"))
    sn, stext = served(conc.get("lvlip"))
    rows.append(("concurrency", f"{count:,} concurrent connections, each echoed once", "concurrent", ktext, stext,
                 "—", None if sn is None else sn == count))
    per_idle = per_echo = None
    rss = (conc.get("lvlip") or {}).get("rss_kb", {})
    if "before" in rss and "idle" in rss:
        per_idle = (rss["idle"] - rss["before"]) / count
    if "before" in rss and "echoed" in rss:
        per_echo = (rss["echoed"] - rss["before"]) / count
    rows.append(("concurrency", "lvlipd RSS per idle connection (KB)", "rss_kb", "n/a", fmt(per_idle, 1), "—",
                 None if per_idle is None else at_most(per_idle, "rss_kb") and sn == count))
    rows.append(("concurrency", "lvlipd RSS per connection after its echo (KB)", None, "n/a", fmt(per_echo, 1), "—",
                 None))

    loss = r.get("loss", {})
    for percent in LOSSES:
        kv, kt = goodput(median_run(loss.get(("kernel", percent))))
        sv, st = goodput(median_run(loss.get(("lvlip", percent))))
        q = ratio_of(sv, kv)
        mb = cfg["loss_bytes"] // 1_000_000
        rows.append(("loss", f"goodput, {mb} MB download at {percent}% loss (Mbit/s, time; median run)", "loss",
                     kt, st, ratio_text(q), at_least(q, "loss")))

    sendloss = r.get("sendloss", {})
    for size in cfg["sendloss_bytes"]:
        for percent in LOSSES:
            kv, kt = goodput(median_run(sendloss.get(("kernel", size, percent))))
            sv, st = goodput(median_run(sendloss.get(("lvlip", size, percent))))
            q = ratio_of(sv, kv)
            rows.append(("sendloss", f"goodput, {size // 1_000_000} MB upload at {percent}% loss, lvlip the sender "
                         f"(Mbit/s, time; median run)", "sendloss", kt, st, ratio_text(q), at_least(q, "sendloss")))

    cpu = r.get("cpu", {})
    up, down = cpu_per_gb(cpu, "upload"), cpu_per_gb(cpu, "download")
    rows.append(("bulk", "lvlipd CPU seconds per GB, bulk upload", None, "n/a", fmt(up), "—", None))
    rows.append(("bulk", "lvlipd CPU seconds per GB, bulk download", None, "n/a", fmt(down), "—", None))
    q = ratio_of(up, down)
    rows.append(("bulk", "lvlipd CPU per GB, upload / download", "cpu_ratio", "n/a", ratio_text(q), "—",
                 at_most(q, "cpu_ratio")))
    return rows


TARGET_TEXT = {
    "upload": ">= {}x", "download": ">= {}x", "rr_p50": "<= {}x", "connrate": ">= {}x",
    "rss_kb": "<= {} KB", "loss": ">= {}x", "sendloss": ">= {}x", "retrans": "<= {}%", "cpu_ratio": "<= {}x",
}


def target_text(key):
    """The bound, and the mode it is judged in where that is one mode only."""
    if key is None:
        return "—"
    if key == "concurrent":
        return "all"
    bound, judged = TARGETS[key]
    text = TARGET_TEXT[key].format(bound)
    if len(judged) == 1:
        text += f" {judged[0]}"
    if key == "retrans":
        text += f" (goal {RETRANS_GOAL}%)"
    return text


def verdicts(key, passed_by_mode):
    """The result cell: PASS or MISS per mode the target is judged in, among those run."""
    if key is None:
        return "—"
    judged = TARGETS[key][1] if key in TARGETS else tuple(passed_by_mode)
    parts = []
    for mode, passed in passed_by_mode.items():
        if mode not in judged:
            continue
        word = "MISS (no result)" if passed is None else "PASS" if passed else "MISS"
        parts.append(f"{mode} {word}" if len(passed_by_mode) > 1 or len(judged) > 1 else word)
    return ", ".join(parts) if parts else f"— (judged {', '.join(judged)})"


def build_rows(bed):
    """The table: per figure of the phases run, the kernel, lvlip and ratio cells of each mode
    run, the target and its results."""
    modes = [mode for mode, _ in bed.args.modes]
    per_mode = {mode: mode_rows(bed.by_mode.get(mode, {}), bed.cfg) for mode in modes}
    rows = []
    for i, (phase, figure, key, *_rest) in enumerate(per_mode[modes[0]]):
        if bed.args.only and phase not in bed.args.only:
            continue
        cells = []
        for mode in modes:
            cells += list(per_mode[mode][i][3:6])
        passed = {mode: per_mode[mode][i][6] for mode in modes}
        rows.append([figure, *cells, target_text(key), verdicts(key, passed)])
    return rows
