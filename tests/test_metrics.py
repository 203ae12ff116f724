"""casty.metrics: the Prometheus collector, scraped from a real CollectorRegistry after
traffic between two systems on loopback; label values from peers stay escaped."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from casty import NodeStats, PeerStats, RemoteActorSystem
from casty.metrics import CastyCollector, peer_label
from tests.remote_helpers import Collector, Echo, Ping, echo_behavior, registry

LOCAL = "127.0.0.1"


def sample(text: str, name: str, labels: str = "") -> float:
    """The value of one sample line of the exposition ``text``."""
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, (prefix, text)
    return float(lines[0][len(prefix):])


async def test_exposition_after_traffic() -> None:
    async with RemoteActorSystem("a", registry=registry()) as a, RemoteActorSystem("b", registry=registry()) as b:
        inbox = Collector()
        b.spawn(inbox.behavior(), "inbox")
        b.spawn(echo_behavior(), "echo")
        for i in range(7):
            a.ref(f"casty://b@{LOCAL}:{b.address.port}/user/inbox").tell(Ping(i))
        assert await a.ask(a.ref(f"casty://b@{LOCAL}:{b.address.port}/user/echo"),
                           lambda r: Echo("x", r), timeout=5) == "x"
        await inbox.wait(7)
        reg = CollectorRegistry()
        reg.register(CastyCollector(a))
        text = generate_latest(reg).decode()
        peer = f'peer="{LOCAL}:{b.address.port}"'
        assert sample(text, "casty_messages_sent_total", peer) == 8.0
        assert sample(text, "casty_messages_received_total", peer) == 1.0
        assert sample(text, "casty_bytes_sent_total", peer) == a.stats().peers[(LOCAL, b.address.port)].bytes_sent
        assert sample(text, "casty_bytes_received_total", peer) > 0
        assert sample(text, "casty_queued_bytes", peer) == 0.0
        assert sample(text, "casty_reconnects_total", peer) == 0.0
        assert sample(text, "casty_connections", peer) == 2.0
        assert sample(text, "casty_seconds_since_received", peer) >= 0.0
        assert sample(text, "casty_loop_lag_seconds") == 0.0
        assert sample(text, "casty_inbound_dropped_total") == 0.0
        assert "# TYPE casty_messages_sent_total counter" in text
        assert "# TYPE casty_queued_bytes gauge" in text
        assert "casty_rtt_seconds{" not in text  # none measured: no sample rather than a made-up one
        assert "casty_drops_total{" not in text


async def test_drops_by_peer_and_reason() -> None:
    failures: list[object] = []
    async with RemoteActorSystem("a", registry=registry(), on_send_failure=failures.append) as a:
        a.ref(f"casty://b@{LOCAL}:1/user/inbox").tell(Ping(0))
        async with asyncio.timeout(5):
            while not failures:
                await asyncio.sleep(0.005)
        reg = CollectorRegistry()
        reg.register(CastyCollector(a))
        text = generate_latest(reg).decode()
        assert sample(text, "casty_drops_total", f'peer="{LOCAL}:1",reason="connect_failed"') == 1.0
        assert sample(text, "casty_send_drops_total", 'reason="connect_failed"') == 1.0


class _Fixed:
    """A stats source with a peer whose host no validated handshake would carry."""

    def __init__(self, host: str) -> None:
        self.host = host

    def stats(self) -> NodeStats:
        peer = PeerStats(self.host, 1, 1, 0, 0, 0, {}, 0, 0, 0, 0.002, 1.5)
        return NodeStats({(self.host, 1): peer}, {}, {"dead": 2}, 0, 0.01, 0)


def test_peer_labels_are_escaped_and_bounded() -> None:
    hostile = 'evil"}\ncasty_forged_total 1\n' + "x" * 10_000
    reg = CollectorRegistry()
    reg.register(CastyCollector(_Fixed(hostile)))
    text = generate_latest(reg).decode()
    assert "\ncasty_forged_total" not in text  # no line of the peer's making
    line = next(x for x in text.splitlines() if x.startswith("casty_messages_sent_total{"))
    assert len(line) < 400 and line.endswith(" 1.0")
    rtt = next(x for x in text.splitlines() if x.startswith("casty_rtt_seconds{"))
    assert rtt.endswith(" 0.002") and "\\n" in rtt  # the newline shown escaped, inside the label
    assert 'casty_local_drops_total{reason="dead"} 2.0' in text
    assert sample(text, "casty_loop_lag_seconds") == 0.01


def test_peer_label_forms() -> None:
    assert peer_label("10.0.0.1", 7001) == "10.0.0.1:7001"
    assert peer_label("::1", 7001) == "[::1]:7001"
    assert peer_label("node-1.example", 1) == "node-1.example:1"
    assert len(peer_label("h" * 10_000, 1)) < 300


def test_collector_needs_a_stats_source() -> None:
    with pytest.raises(TypeError, match="needs an object with stats"):
        CastyCollector(object())  # type: ignore[arg-type]


def test_importing_casty_does_not_need_prometheus_client() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import casty\n"
        "assert 'casty.metrics' not in sys.modules\n"
        "try:\n    import casty.metrics\nexcept ImportError:\n    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "ok"
