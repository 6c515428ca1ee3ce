"""Phase 3: connection rate: connect, 64-byte request, 64-byte reply, close, in a loop."""

from .loadgen import alternating, start_echo_servers
from .settings import ECHO_PORTS


def run(bed):
    seconds = bed.cfg["cr_seconds"]
    bed.start_daemon()
    start_echo_servers(bed)
    bed.warm_up()
    bed.results["cr"] = alternating(bed, "connrate", seconds, ECHO_PORTS,
                                    what="3/7 connection rate: connect, 64 B request/reply, close")
    bed.daemon_alive("connection rate")
    bed.stop_all()
    bed.stop_daemon()
