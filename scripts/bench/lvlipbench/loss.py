"""Phase 5: goodput of a download under 1% and 5% random loss (nftables `numgen random`);
its loss rule also serves phase 6 (sendloss.py)."""

import json
import re
import time

from .settings import KERNEL_TAP_IP, LOSS_ROUND_BUDGET, LOSSES, PEER_NS, SOURCE_PORT, VETH_PEER_IP
from .testbed import sh


def loss_rule(bed, percent, device, hook, peer=False):
    """The same nftables selection for both stacks, on the link to the receiver of the data.
    The counter rule before it counts the frames the rule saw. On an ingress hook (the
    receiver's, which the sender cannot see) the frame is dropped; on tap0's egress it is
    sent to a sink device instead (veth lvlipsink0, whose peer discards it): a frame dropped
    in the sender's own egress path is reported to its TCP, which sends it again at once
    without counting a retransmission (and only shrinks its window), so that would be no
    loss at all."""
    table = "lvlip_bench_loss"
    prefix = ["ip", "netns", "exec", PEER_NS] if peer else []
    verdict = ["drop"] if hook == "ingress" else ["fwd", "to", "lvlipsink0"]
    rules = [
        ["nft", "add", "table", "netdev", table],
        ["nft", "add", "chain", "netdev", table, "c", f"{{ type filter hook {hook} device {device} priority 0; }}"],
        ["nft", "add", "rule", "netdev", table, "c", "counter"],
        ["nft", "add", "rule", "netdev", table, "c", "numgen", "random", "mod", "100", "<", str(percent),
         "counter", *verdict],
    ]
    for rule in rules:
        sh(*prefix, *rule)
        bed.record(rule, "peer" if peer else "")
    return table


def loss_counts(bed, table, peer=False):
    prefix = ["ip", "netns", "exec", PEER_NS] if peer else []
    text = sh(*prefix, "nft", "list", "table", "netdev", table)
    counts = [int(m) for m in re.findall(r"counter packets (\d+)", text)]
    sh(*prefix, "nft", "delete", "table", "netdev", table)
    return counts if len(counts) == 2 else [0, 0]


def lossy_transfer(bed, stack, percent, mode, port, total, device, hook, peer=False):
    """One `loadgen MODE` (download or upload) of `total` bytes by `stack` through `percent`%
    loss on `device`'s `hook` (in the peer namespace with `peer`). Returns loadgen's result
    with the frames the rule saw and dropped, or None if it printed none."""
    table = loss_rule(bed, percent, device, hook, peer=peer)
    target = KERNEL_TAP_IP if stack == "lvlip" else VETH_PEER_IP
    try:
        code, out, err = bed.run(f"{mode} {stack}", [bed.loadgen, mode, target, port, total, bed.cfg["loss_timeout"]],
                                 timeout=bed.cfg["loss_timeout"] + 30, stack=stack == "lvlip")
    finally:
        counts = loss_counts(bed, table, peer=peer)
    try:
        result = json.loads(out)
    except ValueError:
        result = None
    if result is None or not result.get("complete"):
        bed.problem(f"{total // 1_000_000} MB {mode} under {percent}% loss ({stack}) did not complete: "
                    f"exit {code}, {out.strip() or err.strip()[-300:]}")
    if result is not None:
        result["frames_seen"], result["frames_dropped"] = counts
    return result


def lossy_download(bed, stack, percent, total):
    device, hook = ("tap0", "egress") if stack == "lvlip" else ("veth0", "ingress")
    return lossy_transfer(bed, stack, percent, "download", SOURCE_PORT, total, device, hook)


def run(bed):
    total = bed.cfg["loss_bytes"]
    started = time.monotonic()
    bed.start_daemon()
    bed.one_segment_per_frame()
    for command in (["ip", "link", "add", "lvlipsink0", "type", "veth", "peer", "name", "lvlipsink1"],
                    ["ip", "link", "set", "lvlipsink0", "up"], ["ip", "link", "set", "lvlipsink1", "up"]):
        sh(*command)
        bed.record(command)
    bed.start("source (tap)", [bed.loadgen, "source", KERNEL_TAP_IP, SOURCE_PORT, total])
    bed.start("source (peer)", [bed.loadgen, "source", VETH_PEER_IP, SOURCE_PORT, total], peer=True)
    bed.wait_listening(SOURCE_PORT)
    bed.wait_listening(SOURCE_PORT, peer=True)
    bed.warm_up()
    bed.results["loss"] = {(stack, p): [] for p in LOSSES for stack in ("kernel", "lvlip")}
    runs = bed.cfg["loss_runs"]
    for run in range(runs):
        if run > 0 and time.monotonic() - started > LOSS_ROUND_BUDGET:
            bed.problem(f"loss: time budget reached, {run} of {runs} rounds run")
            break
        for percent in LOSSES:
            for stack in ("kernel", "lvlip"):
                bed.progress.set(f"5/7 goodput under {percent}% loss: {stack} downloads {total // 1_000_000} MB, "
                                 f"run {run + 1}/{runs} (at most {bed.cfg['loss_timeout']} s)")
                bed.results["loss"][(stack, percent)].append(lossy_download(bed, stack, percent, total))
    bed.daemon_alive("loss")
    bed.stop_all()
    bed.stop_daemon()
    bed.restore_links()
