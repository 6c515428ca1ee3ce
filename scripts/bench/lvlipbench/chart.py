"""The chart of a full run, docs/bench-throughput.png (matplotlib)."""

from .host import machine
from .rows import median_or_none, median_run
from .settings import CHART, LOSSES


COLORS = {"kernel": "#4c72b0", "lvlip": "#dd8452"}


def draw(bed):
    """One row of three panels per mode run (pinned above unpinned)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = bed.args.modes
    # The throughput panel is wider: it holds the bulk and the eight loss bars.
    fig, axes = plt.subplots(len(modes), 3, figsize=(20, 5.4 * len(modes)), squeeze=False,
                             gridspec_kw={"width_ratios": [2, 1, 1]})
    for row, (mode, cpu) in zip(axes, modes):
        draw_mode(row, bed.by_mode.get(mode, {}), bed.cfg, "not pinned" if cpu is None else f"pinned to CPU {cpu}")
    fig.suptitle(f"lvlip vs kernel veth ({machine()})", fontsize=10)
    fig.tight_layout()
    fig.savefig(CHART, dpi=100)
    plt.close(fig)


def draw_mode(axes, r, cfg, mode):
    colors = COLORS

    # Throughput bars (Gbit/s, log scale: goodput under loss is far below bulk).
    ax = axes[0]
    labels, values = [], {"kernel": [], "lvlip": []}
    bulk = r.get("bulk", {})
    for direction in ("upload", "download"):
        labels.append(f"bulk\n{direction}")
        for stack in values:
            values[stack].append(median_or_none(bulk.get(f"{stack} {direction}", [])) or 0)
    for percent in LOSSES:
        labels.append(f"down {cfg['loss_bytes'] // 1_000_000} MB\n{percent}% loss")
        for stack in values:
            d = median_run(r.get("loss", {}).get((stack, percent)))
            values[stack].append(d["mbit_per_s"] / 1000 if d and d.get("complete") else 0)
    for size in cfg["sendloss_bytes"]:
        for percent in LOSSES:
            labels.append(f"up {size // 1_000_000} MB\n{percent}% loss")
            for stack in values:
                d = median_run(r.get("sendloss", {}).get((stack, size, percent)))
                values[stack].append(d["mbit_per_s"] / 1000 if d and d.get("complete") else 0)
    width = 0.38
    for offset, stack in ((-width / 2, "kernel"), (width / 2, "lvlip")):
        xs = [i + offset for i in range(len(labels))]
        bars = ax.bar(xs, values[stack], width, label=stack if stack == "lvlip" else "kernel veth",
                      color=colors[stack])
        for bar, v in zip(bars, values[stack]):
            if v > 0:
                ax.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(labels)), labels, fontsize=9)
    ax.set_yscale("log")
    ax.set_ylabel("Gbit/s (log)")
    ax.set_title(f"Throughput and goodput ({mode})")
    ax.legend()

    # Rates (thousands per second).
    ax = axes[1]
    labels = ["round trips/s\n(64 B ping-pong)", "connections/s"]
    vals = {stack: [((r.get("rr", {}).get(stack) or {}).get("rate") or 0) / 1000,
                    ((r.get("cr", {}).get(stack) or {}).get("rate") or 0) / 1000] for stack in ("kernel", "lvlip")}
    for offset, stack in ((-width / 2, "kernel"), (width / 2, "lvlip")):
        bars = ax.bar([i + offset for i in range(2)], vals[stack], width,
                      label=stack if stack == "lvlip" else "kernel veth", color=colors[stack])
        for bar, v in zip(bars, vals[stack]):
            ax.annotate(f"{v:.1f}k", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(2), labels)
    ax.set_ylabel("thousands per second")
    ax.set_title(f"Request/response and connection rate ({mode})")
    ax.legend()

    # Latency distribution of the ping-pong (CDF).
    ax = axes[2]
    for stack in ("kernel", "lvlip"):
        d = r.get("rr", {}).get(stack)
        if not d:
            continue
        cdf = [point for point in d["latency"]["cdf"] if point[0] < 100]  # the maximum would stretch the axis
        ax.plot([us for _, us in cdf], [p for p, _ in cdf], label=f"{stack if stack == 'lvlip' else 'kernel veth'} "
                f"(p50 {d['latency']['p50_us']:.0f} µs)", color=colors[stack])
    ax.set_xscale("log")
    ax.set_xlabel("round-trip latency (µs, log)")
    ax.set_ylabel("percentile")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"64-byte request/response latency ({mode})")
    ax.legend(loc="lower right")
