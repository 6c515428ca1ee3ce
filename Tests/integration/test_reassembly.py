"""IPv4 reassembly seen from outside: an incomplete datagram is held (and shows in
IpReasmPending / IpReasmBytes), completes when its last piece arrives, and releases its memory.
The 30 s timeout itself is covered by the Swift unit tests, not in real time here."""

from harness import ETHERTYPE_IPV4, STACK_IP, STACK_MAC, RawLink, ethernet, icmp_echo, ipv4, ping


def fragments(message: bytes, identification: int, cuts):
    """IPv4 fragments of `message` (from 10.0.0.5 to the stack) split at the byte offsets
    `cuts`, in order; each but the last carries a multiple of 8 bytes."""
    bounds = [0, *cuts, len(message)]
    pieces = []
    for start, end in zip(bounds, bounds[1:]):
        pieces.append(ipv4(message[start:end], identification=identification, offset=start,
                           more_fragments=end < len(message)))
    return pieces


def send(link, datagram):
    link.send(ethernet(STACK_MAC, link.mac, ETHERTYPE_IPV4, datagram))


def echo_request(size: int, sequence=1) -> bytes:
    data = bytes(i & 0xFF for i in range(size - 8))
    return icmp_echo(0x5151, sequence, data)


def test_incomplete_datagram_is_held_until_complete(daemon):
    link = RawLink()
    first, middle, last = fragments(echo_request(3000), 0x3001, [1000, 2000])
    before = daemon.stats()
    assert before["IpReasmPending"] == 0 and before["IpReasmBytes"] == 0

    send(link, first)
    held = daemon.wait_for(lambda s: s["IpReasmReqds"] == before["IpReasmReqds"] + 1, what="first fragment")
    assert held["IpReasmPending"] == 1
    # At least the bytes received, plus bounded book-keeping.
    assert 1000 <= held["IpReasmBytes"] <= 1000 + 20 + 4096

    send(link, last)  # Out of order: a hole remains at [1000, 2000).
    held = daemon.wait_for(lambda s: s["IpReasmReqds"] == before["IpReasmReqds"] + 2, what="last fragment")
    assert held["IpReasmPending"] == 1
    assert 2000 <= held["IpReasmBytes"] <= 3000 + 20 + 4096
    assert held["IpReasmOKs"] == before["IpReasmOKs"]
    assert held["IcmpInEchos"] == before["IcmpInEchos"]

    send(link, middle)
    done = daemon.wait_for(lambda s: s["IcmpOutEchoReps"] == before["IcmpOutEchoReps"] + 1, what="echo reply")
    assert done["IpReasmOKs"] == before["IpReasmOKs"] + 1
    assert done["IpReasmFails"] == before["IpReasmFails"]
    assert done["IpReasmPending"] == 0
    assert done["IpReasmBytes"] == 0
    # The 3000-byte reply goes back in fragments (MTU 1500): 1480 + 1480 + 40.
    assert done["IpFragCreates"] - before["IpFragCreates"] == 3
    link.close()


def test_several_incomplete_datagrams_are_counted(daemon):
    link = RawLink()
    before = daemon.stats()
    for identification in range(0x4000, 0x4005):
        send(link, fragments(echo_request(2000), identification, [1000])[0])
    held = daemon.wait_for(lambda s: s["IpReasmReqds"] == before["IpReasmReqds"] + 5, what="five fragments")
    assert held["IpReasmPending"] == 5
    assert 5 * 1000 <= held["IpReasmBytes"] <= 5 * (1020 + 4096)
    # A stray fragment ID does not complete anything; the daemon still answers.
    _, _, received, _ = ping("-c", "1", "-W", "1", STACK_IP)
    assert received == 1
    assert daemon.stats()["IpReasmPending"] == 5
    link.close()


def test_memory_is_released_when_the_last_fragment_completes_in_order(daemon):
    # Regression: the completing fragment's bytes used to stay charged to IpReasmBytes forever
    # (removePartial ran on the stored copy that lacked it).
    link = RawLink()
    before = daemon.stats()
    for datagram in fragments(echo_request(2000), 0x3002, [1000]):
        send(link, datagram)
    done = daemon.wait_for(lambda s: s["IcmpOutEchoReps"] == before["IcmpOutEchoReps"] + 1, what="echo reply")
    link.close()
    assert done["IpReasmPending"] == 0
    assert done["IpReasmBytes"] == 0, "the last fragment's 1000 bytes are still charged"


def test_reassembly_keeps_working_after_many_datagrams(daemon):
    # Regression: 2960 bytes of ICMP = 1480 + 1480, and each datagram's second fragment used
    # to leak 1480 bytes, so ~2830 of them exhausted the 4 MB reassembly budget for good.
    before = daemon.stats()
    ping("-q", "-c", "3000", "-i", "0.001", "-s", "2952", "-W", "1", STACK_IP, timeout=60)
    result, sent, received, _ = ping("-c", "3", "-i", "0.1", "-s", "2952", "-W", "1", STACK_IP)
    assert received == sent == 3, result.stdout
    after = daemon.stats()
    assert after["IpReasmFails"] == before["IpReasmFails"]
    assert after["IpReasmOKs"] - before["IpReasmOKs"] >= 2900
    assert after["IpReasmBytes"] == 0
