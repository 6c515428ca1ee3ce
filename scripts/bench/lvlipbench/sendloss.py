"""Phase 6: lvlip as the sender under loss: goodput of 20 MB and 50 MB uploads through 1% and 5%
random drop on the receiver's ingress, against the kernel sender under the same drop."""

import time

from .loss import lossy_transfer
from .settings import KERNEL_TAP_IP, LOSS_ROUND_BUDGET, LOSSES, SINK_PORT, VETH_PEER_IP


def lossy_upload(bed, stack, percent, total):
    """One upload through `percent`% drop on the receiver's ingress: tap0's for lvlip's frames,
    veth1's in the peer namespace for the kernel's. A frame dropped there has left the sender,
    which learns of the loss only from the receiver's ACKs, as on a real link (a drop in the
    sender's own egress path would be reported to it locally: loss.py)."""
    before = bed.tcp_counters(stack)
    if stack == "lvlip":
        result = lossy_transfer(bed, stack, percent, "upload", SINK_PORT, total, "tap0", "ingress")
    else:
        result = lossy_transfer(bed, stack, percent, "upload", SINK_PORT, total, "veth1", "ingress", peer=True)
    after = bed.tcp_counters(stack)
    if result is not None:
        result["retransmitted"] = after["TcpRetransSegs"] - before["TcpRetransSegs"]
    return result


def run(bed):
    started = time.monotonic()
    # lvlipd without offload writes one segment per frame, as the kernel sender does with
    # gso_max_segs 1 and TSO/GSO off, so that one dropped frame is one lost segment on both
    # paths (with TSO, lvlipd's super-frames of up to 44 segments would be dropped whole).
    bed.start_daemon(offload=False)
    bed.one_segment_per_frame()
    bed.start("sink (tap)", [bed.loadgen, "sink", KERNEL_TAP_IP, SINK_PORT])
    bed.start("sink (peer)", [bed.loadgen, "sink", VETH_PEER_IP, SINK_PORT], peer=True)
    bed.wait_listening(SINK_PORT)
    bed.wait_listening(SINK_PORT, peer=True)
    bed.warm_up()
    sizes = bed.cfg["sendloss_bytes"]
    bed.results["sendloss"] = {(stack, size, p): [] for size in sizes for p in LOSSES
                               for stack in ("kernel", "lvlip")}
    runs = bed.cfg["sendloss_runs"]
    for run in range(runs):
        if run > 0 and time.monotonic() - started > LOSS_ROUND_BUDGET:
            bed.problem(f"sendloss: time budget reached, {run} of {runs} rounds run")
            break
        for size in sizes:
            for percent in LOSSES:
                for stack in ("kernel", "lvlip"):
                    bed.progress.set(f"6/7 sender under {percent}% loss: {stack} uploads {size // 1_000_000} MB, "
                                     f"run {run + 1}/{runs} (at most {bed.cfg['loss_timeout']} s)")
                    bed.results["sendloss"][(stack, size, percent)].append(lossy_upload(bed, stack, percent, size))
    bed.daemon_alive("sendloss")
    bed.stop_all()
    bed.stop_daemon()
    bed.restore_links()
