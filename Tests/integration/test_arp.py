"""ARP through the kernel's arping (iputils)."""

from harness import STACK_IP, TAP, require_tool, run


def arping(*args, timeout=15):
    return run(["arping", *args, "-I", TAP], timeout=timeout)


def test_arping_gets_three_replies(daemon):
    require_tool("arping")
    before = daemon.stats()
    result = arping("-c", "3", "-w", "5", STACK_IP)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Received 3 response(s)" in result.stdout, result.stdout
    assert result.stdout.count("reply from 10.0.0.4 [02:00:0A:00:00:04]") == 3, result.stdout
    after = daemon.stats()
    assert after["ArpInRequests"] - before["ArpInRequests"] == 3
    assert after["ArpOutReplies"] - before["ArpOutReplies"] == 3


def test_arping_shows_configured_mac(start_daemon):
    require_tool("arping")
    start_daemon("--mac", "02:11:22:33:44:55")
    result = arping("-c", "2", "-w", "5", STACK_IP)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[02:11:22:33:44:55]" in result.stdout, result.stdout


def test_arp_for_another_address_is_not_answered(daemon):
    require_tool("arping")
    before = daemon.stats()
    result = arping("-c", "2", "-w", "2", "10.0.0.7")
    assert result.returncode != 0
    assert "Received 0 response(s)" in result.stdout, result.stdout
    after = daemon.stats()
    assert after["ArpInRequests"] - before["ArpInRequests"] == 2
    assert after["ArpOutReplies"] == before["ArpOutReplies"]
