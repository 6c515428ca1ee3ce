"""The chart of a full run, docs/bench-throughput.png (matplotlib)."""

from .host import machine
from .report import median_or_none, median_run
from .settings import CHART, LOSSES


def draw(bed):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = bed.results
    colors = {"kernel": "#4c72b0", "lvlip": "#dd8452"}
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))

    # Throughput bars (Gbit/s, log scale: goodput under loss is far below bulk).
    ax = axes[0]
    labels, values = [], {"kernel": [], "lvlip": []}
    bulk = r.get("bulk", {})
    for direction in ("upload", "download"):
        labels.append(f"bulk\n{direction}")
        for stack in values:
            values[stack].append(median_or_none(bulk.get(f"{stack} {direction}", [])) or 0)
    for percent in LOSSES:
        labels.append(f"{bed.cfg['loss_bytes'] // 1_000_000} MB\n{percent}% loss")
        for stack in values:
            d = median_run(r.get("loss", {}).get((stack, percent)))
            values[stack].append(d["mbit_per_s"] / 1000 if d and d.get("complete") else 0)
    width = 0.38
    for offset, stack in ((-width / 2, "kernel"), (width / 2, "lvlip")):
        xs = [i + offset for i in range(len(labels))]
        bars = ax.bar(xs, values[stack], width, label=stack if stack == "lvlip" else "kernel veth",
                      color=colors[stack])
        for bar, v in zip(bars, values[stack]):
            if v > 0:
                ax.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yscale("log")
    ax.set_ylabel("Gbit/s (log)")
    ax.set_title("Throughput and goodput")
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
    ax.set_title("Request/response and connection rate")
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
    ax.set_title("64-byte request/response latency")
    ax.legend(loc="lower right")

    pin = "not pinned" if bed.args.cpu == "none" else f"all pinned to CPU {bed.args.cpu}"
    fig.suptitle(f"lvlip vs kernel veth ({machine()}; {pin})", fontsize=10)
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)
    plt.close(fig)
