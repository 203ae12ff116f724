"""Prometheus metrics for a casty node: ``pip install 'casty[metrics]'`` (``prometheus_client``).

:class:`CastyCollector` turns one node's statistics (``RemoteActorSystem.stats()``,
see :mod:`casty.transport.stats`) into metric families each time Prometheus scrapes,
so nothing is counted twice and nothing runs between scrapes.  Register one per
node::

    from prometheus_client import REGISTRY, start_http_server
    from casty.metrics import CastyCollector

    REGISTRY.register(CastyCollector(system))
    start_http_server(9100)

Metrics (``peer`` is ``host:port``, IPv6 hosts in brackets):

==================================  =======  ======================================
``casty_messages_sent_total``       counter  messages accepted for sending, by peer
``casty_messages_received_total``   counter  messages received, by peer
``casty_bytes_sent_total``          counter  bytes of frames sent, by peer
``casty_bytes_received_total``      counter  bytes received, by peer
``casty_drops_total``               counter  messages not sent, by peer and reason
``casty_queued_bytes``              gauge    bytes waiting to be sent, by peer
``casty_reconnects_total``          counter  connections after the first, by peer
``casty_connections``               gauge    connections open, by peer
``casty_rtt_seconds``               gauge    last heartbeat round trip, by peer
``casty_seconds_since_received``    gauge    time since the peer was last heard
``casty_send_drops_total``          counter  messages not sent, all peers, by reason
``casty_local_drops_total``         counter  local deliveries dropped, by reason
``casty_inbound_dropped_total``     counter  inbound frames not decoded or delivered
``casty_peer_records_evicted_total`` counter peer records let go (max_peer_stats)
``casty_loop_lag_seconds``          gauge    how late the event loop last ran a timer
==================================  =======  ======================================

Peers, and so the ``peer`` label values, are chosen by others: there are at most
``max_peer_stats`` of them (plus those with an open connection), and a host that is
not short printable text is shown as a bounded, escaped repr.  Importing :mod:`casty`
does not import this module nor ``prometheus_client``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from casty.address import loggable
from casty.transport.stats import NodeStats

__all__ = ["CastyCollector", "peer_label"]

#: longest host shown as it is in a ``peer`` label (a hostname is at most 253)
_MAX_LABEL_HOST = 255


class StatsSource(Protocol):
    """What the collector reads: a RemoteActorSystem, or a bare TcpNode."""

    def stats(self) -> NodeStats: ...


def peer_label(host: str, port: int) -> str:
    """The ``peer`` label value of (host, port): ``host:port``, IPv6 in brackets, and a host
    that is not short printable text as a bounded, escaped repr.

    >>> peer_label("10.0.0.1", 7001), peer_label("::1", 7001), peer_label("a\\nb", 1)
    ('10.0.0.1:7001', '[::1]:7001', "'a\\\\nb':1")
    """
    shown = loggable(host, _MAX_LABEL_HOST) if isinstance(host, str) else loggable(repr(host), _MAX_LABEL_HOST)
    if ":" in shown and not shown.startswith("'"):
        shown = f"[{shown}]"
    return f"{shown}:{int(port)}"


class CastyCollector(Collector):
    """A Prometheus collector of one casty node's statistics (see the module docstring).

    ``source`` is anything with a ``stats()`` returning :class:`NodeStats`: a
    :class:`~casty.RemoteActorSystem` (the usual) or a :class:`~casty.TcpNode`.
    """

    def __init__(self, source: StatsSource) -> None:
        if not callable(getattr(source, "stats", None)):
            raise TypeError(f"CastyCollector needs an object with stats() (a RemoteActorSystem), got {source!r}")
        self._source = source

    def describe(self) -> Iterator[Metric]:
        """The metric families, without samples (the registry checks names with them)."""
        return iter(_families())

    def collect(self) -> Iterator[Metric]:
        stats = self._source.stats()
        f = _families()
        (sent, received, bytes_sent, bytes_received, drops, queued, reconnects, connections, rtt, silent,
         send_drops, local_drops, inbound, evicted, lag) = f
        for (host, port), p in stats.peers.items():
            peer = [peer_label(host, port)]
            sent.add_metric(peer, p.messages_sent)
            received.add_metric(peer, p.messages_received)
            bytes_sent.add_metric(peer, p.bytes_sent)
            bytes_received.add_metric(peer, p.bytes_received)
            for reason, count in sorted(p.drops.items()):
                drops.add_metric([peer[0], reason], count)
            queued.add_metric(peer, p.queued_bytes)
            reconnects.add_metric(peer, p.reconnects)
            connections.add_metric(peer, p.connections)
            if p.rtt is not None:
                rtt.add_metric(peer, p.rtt)
            if p.seconds_since_received is not None:
                silent.add_metric(peer, p.seconds_since_received)
        for reason, count in sorted(stats.drops.items()):
            send_drops.add_metric([reason], count)
        for reason, count in sorted(stats.local_drops.items()):
            local_drops.add_metric([reason], count)
        inbound.add_metric([], stats.inbound_dropped)
        evicted.add_metric([], stats.peers_evicted)
        lag.add_metric([], stats.loop_lag)
        return iter(f)


def _families() -> list[Any]:
    """Fresh, empty families, in the order collect() fills them."""
    peer = ["peer"]
    return [
        CounterMetricFamily("casty_messages_sent", "Messages accepted for sending to the peer.", labels=peer),
        CounterMetricFamily("casty_messages_received", "Messages received from the peer.", labels=peer),
        CounterMetricFamily("casty_bytes_sent", "Bytes of frames sent to the peer (headers included).",
                            labels=peer),
        CounterMetricFamily("casty_bytes_received", "Bytes received from the peer.", labels=peer),
        CounterMetricFamily("casty_drops", "Messages for the peer that were not sent, by reason.",
                            labels=["peer", "reason"]),
        GaugeMetricFamily("casty_queued_bytes", "Bytes waiting to be sent to the peer.", labels=peer),
        CounterMetricFamily("casty_reconnects", "Connections with the peer established after the first, "
                            "per direction.", labels=peer),
        GaugeMetricFamily("casty_connections", "Connections open with the peer.", labels=peer),
        GaugeMetricFamily("casty_rtt_seconds", "Last heartbeat round trip to the peer.", labels=peer),
        GaugeMetricFamily("casty_seconds_since_received", "Seconds since bytes last arrived from the peer.",
                          labels=peer),
        CounterMetricFamily("casty_send_drops", "Messages not sent, all peers together, by reason.",
                            labels=["reason"]),
        CounterMetricFamily("casty_local_drops", "Messages to this node's actors not delivered, by reason.",
                            labels=["reason"]),
        CounterMetricFamily("casty_inbound_dropped", "Inbound message frames not decoded or delivered."),
        CounterMetricFamily("casty_peer_records_evicted", "Peer statistics records let go (max_peer_stats)."),
        GaugeMetricFamily("casty_loop_lag_seconds", "How late this node's event loop last ran a timer."),
    ]
