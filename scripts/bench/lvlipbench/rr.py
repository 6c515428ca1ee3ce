"""Phase 2: request/response, 64-byte ping-pong on one connection: rate and latency."""

from .loadgen import alternating, start_echo_servers


def run(bed):
    seconds = bed.cfg["rr_seconds"]
    bed.start_daemon()
    start_echo_servers(bed)
    bed.warm_up()
    bed.results["rr"] = alternating(bed, "pingpong", seconds, what="2/7 request/response: 64-byte ping-pong")
    bed.daemon_alive("request/response")
    bed.stop_all()
    bed.stop_daemon()
