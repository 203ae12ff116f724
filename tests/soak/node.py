"""One soak node: a RemoteActorSystem that streams numbered tells to its peers and asks them.

Run by ``tests/soak/soak.py`` as ``python -m tests.soak.node NAME TELLS ASK_EVERY REPORT_PATH``.
It talks to the orchestrator in JSON lines: it prints events on stdout and reads
commands on stdin:

* prints ``{"event": "ready", "port": P, "extensions": bool}``;
* ``{"cmd": "start", "peers": {name: port}}`` starts the send loop: for each seq in
  ``range(TELLS)`` one ``Tell(NAME, seq)`` to every peer's ``/user/sink``, an ask to
  every peer each ``ASK_EVERY`` seqs (the only flow control), then a fence per peer: an
  ask retried until answered, so every tell not lost is in before the node says ``done``;
* ``{"cmd": "kill", "peer": name}`` makes the send loop drop its connection to that
  peer (``TcpNode.peer_down``) between two sends;
* ``{"cmd": "report"}`` writes REPORT_PATH (JSON, see :meth:`Soak.report`);
  ``{"cmd": "exit"}`` shuts the node down.

Exact drop accounting: a refusal (queue full, blacklisted) is reported while the send
is still on the stack, so it belongs to the seq being sent.  Every later report
(connect failed, connection lost, peer down) covers frames at the end of what was
accepted for that peer, so it is charged to the newest accepted frames not yet
charged.  Each accepted tell also records its *epoch*, the connection it went to
(watched at each send and at each connection the node establishes), so the
orchestrator can tell frames lost in flight when a connection broke (which TCP cannot
report) from frames lost any other way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any

import casty
from casty import ActorRef, AskFailed, Behavior, Behaviors, RemoteActorSystem, SendFailure, TypeRegistry
from casty.transport.node import TcpNode

Key = tuple[str, int]

ASK_TIMEOUT = 2.0
FENCE_ATTEMPTS = 30
YIELD_EVERY = 50
PROGRESS_EVERY = 500


@dataclass(frozen=True)
class Tell:
    src: str
    seq: int


@dataclass(frozen=True)
class Probe:
    src: str
    n: int
    reply_to: ActorRef[Any]


def registry() -> TypeRegistry:
    reg = TypeRegistry()
    reg.register(Tell)
    reg.register(Probe)
    return reg


class PeerLog:
    """What one node handed its TCP node for one peer, and what was reported lost of it."""

    def __init__(self) -> None:
        self.tags: list[int] = []  # per accepted frame: the tell's seq, or -1 (asks, replies)
        self.epochs: list[int] = []
        self.charged = bytearray()  # per accepted frame: 1 once a report covered it
        self.dropped: list[int] = []  # tell seqs reported not sent
        self.epoch = 0
        # The connection state the last frame went to; kept referenced so identities stay unique.
        self._peer: Any = None
        self._proto: Any = None

    def observe(self, peer: Any) -> None:
        """Start a new epoch if the node's state for the peer is not the connection we know."""
        proto = peer.proto if peer is not None else None
        if peer is not self._peer or proto is not self._proto:
            self.epoch += 1
            self._peer, self._proto = peer, proto

    def established(self, peer: Any, proto: Any) -> None:
        """The node made ``proto`` the connection of ``peer`` (frames queued for it go there)."""
        if peer is self._peer and self._proto is None:
            self._proto = proto  # the frames queued while connecting are this connection's first
        else:
            self.observe(peer)

    def accepted(self, tag: int, peer: Any) -> None:
        self.observe(peer)
        self.tags.append(tag)
        self.epochs.append(self.epoch)
        self.charged.append(0)

    def charge_tail(self, count: int, older_epochs_only: bool) -> int:
        """Mark the newest ``count`` uncharged frames reported; how many found none."""
        i = len(self.tags) - 1
        while count and i >= 0:
            if not self.charged[i] and not (older_epochs_only and self.epochs[i] == self.epoch):
                self.charged[i] = 1
                if self.tags[i] >= 0:
                    self.dropped.append(self.tags[i])
                count -= 1
            i -= 1
        return count

    def epoch_ended(self, peer: Any) -> bool:
        """Whether the connection of the last epoch is gone (or was replaced)."""
        proto = peer.proto if peer is not None else None
        return peer is not self._peer or proto is not self._proto


class Ledger:
    """Logs every frame per peer (wrapping ``node.send_message_to``, which ``send_message``
    and RemoteTransport both go through once the node gives out no connection table, and
    ``node._establish`` to see which connection frames go to) and charges every report to
    the frames it covers."""

    def __init__(self, node: TcpNode) -> None:
        self.node = node
        self.logs: dict[Key, PeerLog] = {}
        self.current = -1  # the seq being told right now, -1 for any other frame
        self.anomalies: list[str] = []
        self.reported: dict[str, int] = {}
        self._in_send: Key | None = None
        self._sync_reported = 0
        self._send = node.send_message_to
        node.send_message_to = self._send_message_to  # type: ignore[method-assign]
        # RemoteTransport writes to an established connection itself when the node gives it
        # its connection table; without one every tell passes send_message_to, to be logged.
        # (Made before the system starts, so before its RemoteTransport asks.)
        node.connection_table = lambda: None  # type: ignore[method-assign]
        self._establish = node._establish
        node._establish = self._on_establish  # type: ignore[method-assign]
        node.add_failure_listener(self._on_failure)

    def log(self, key: Key) -> PeerLog:
        log = self.logs.get(key)
        if log is None:
            log = self.logs[key] = PeerLog()
        return log

    def _send_message_to(self, key: Key, envelope: bytes | list[bytes], *kind: int) -> bool:
        self._in_send, self._sync_reported = key, 0
        try:
            ok = self._send(key, envelope, *kind)
        finally:
            self._in_send = None
        log = self.log(key)
        if ok:
            log.accepted(self.current, self.node._peers.get(key))
        else:
            if self._sync_reported != 1:
                self.anomalies.append(f"refused send to {key} reported {self._sync_reported} times")
            if self.current >= 0:
                log.dropped.append(self.current)
        return ok

    def _on_establish(self, peer: Any, proto: Any, key: Key) -> None:
        self._establish(peer, proto, key)
        self.log(key).established(peer, proto)

    def _on_failure(self, failure: SendFailure) -> None:
        self.reported[failure.reason] = self.reported.get(failure.reason, 0) + failure.count
        key = (failure.host, failure.port)
        if self._in_send == key:
            self._sync_reported += failure.count
            return
        log = self.logs.get(key)
        left = failure.count
        if log is not None:
            superseded = "superseded" in failure.detail
            if superseded:  # the connection that replaced it may have had no frame yet
                log.observe(self.node._peers.get(key))
            left = log.charge_tail(failure.count, older_epochs_only=superseded)
        if left:
            self.anomalies.append(f"{left} of {failure} match no frame sent")


class Soak:
    """The node's state: its system, ledger, what its sink received, its counters."""

    def __init__(self, name: str, tells: int, ask_every: int) -> None:
        self.name = name
        self.tells = tells
        self.ask_every = ask_every
        self.system = RemoteActorSystem(
            name, "127.0.0.1", 0, registry=registry(), blacklist_duration=0.3, connect_timeout=2.0
        )
        self.ledger = Ledger(self.system.node)
        self.received: dict[str, list[int]] = {}
        self.peers: dict[str, Key] = {}
        self.refs: dict[str, ActorRef[Any]] = {}
        self.kills: list[str] = []
        self.counts = {
            "asks_ok": 0, "asks_failed": 0, "fence_retries": 0, "asks_node_down": 0, "kills": 0, "kills_skipped": 0,
        }
        self.sending = False

    def sink(self) -> Behavior[Any]:
        async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
            if isinstance(msg, Tell):
                got = self.received.get(msg.src)
                if got is None:
                    got = self.received[msg.src] = []
                got.append(msg.seq)
            elif isinstance(msg, Probe):
                msg.reply_to.tell(msg.n)
            return Behaviors.same()

        return Behaviors.receive(receive)

    async def ask(self, peer: str, n: int) -> bool:
        try:
            ok = await self.system.ask(self.refs[peer], lambda r: Probe(self.name, n, r), timeout=ASK_TIMEOUT)
        except TimeoutError:
            ok = None
        except AskFailed as exc:  # node_down: its connection was killed while the ask waited
            if exc.reason == "node_down":
                self.counts["asks_node_down"] += 1
            ok = None
        if ok == n:
            self.counts["asks_ok"] += 1
            return True
        self.counts["asks_failed"] += 1
        return False

    async def kill(self, peer: str) -> None:
        """Drop the connection to ``peer``, and let its loss be processed before sending on."""
        key = self.peers[peer]
        entry = self.system.node._peers.get(key)
        proto = entry.proto if entry is not None else None
        self.system.node.peer_down(*key, "soak: connection killed")
        self.counts["kills"] += 1
        emit(event="killed", peer=peer, connected=proto is not None)
        async with asyncio.timeout(5):
            while proto is not None and proto.transport is not None:
                await asyncio.sleep(0)

    async def send_all(self) -> None:
        try:
            await self._send_all()
        except Exception as exc:  # the orchestrator must hear of it, not wait for "done"
            self.ledger.anomalies.append(f"send loop failed: {exc!r}")
            emit(event="done", error=repr(exc))

    async def _send_all(self) -> None:
        self.sending = True
        names = sorted(self.peers)
        targets = [(self.refs[p], p) for p in names]
        ledger = self.ledger
        me = self.name
        for seq in range(self.tells):
            ledger.current = seq
            try:
                for ref, _ in targets:
                    ref.tell(Tell(me, seq))
            finally:
                ledger.current = -1
            while self.kills:
                await self.kill(self.kills.pop(0))
            if seq % self.ask_every == self.ask_every - 1:
                for peer in names:
                    await self.ask(peer, seq)
            elif seq % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            if seq % PROGRESS_EVERY == PROGRESS_EVERY - 1:
                emit(event="progress", seq=seq + 1)
        self.sending = False
        for peer in names:  # everything told before a fence that is answered has arrived
            for _ in range(FENCE_ATTEMPTS):
                if await self.ask(peer, -1):
                    break
                self.counts["fence_retries"] += 1
            else:
                ledger.anomalies.append(f"fence to {peer} never answered")
        emit(event="done")

    def report(self) -> dict[str, Any]:
        node = self.system.node
        stats = self.system.stats()
        names = {key: peer for peer, key in self.peers.items()}
        sent = {}
        for peer, key in self.peers.items():
            log = self.ledger.log(key)
            tells = [(t, e) for t, e in zip(log.tags, log.epochs, strict=True) if t >= 0]
            sent[peer] = {
                "tells": [t for t, _ in tells],
                "epochs": [e for _, e in tells],
                "dropped": log.dropped,
                "last_epoch_ended": log.epoch_ended(node._peers.get(key)),
            }
        return {
            "name": self.name,
            "sent": sent,
            "received": self.received,
            "counts": self.counts,
            "node_drops": dict(stats.drops),
            "reported": self.ledger.reported,
            "anomalies": self.ledger.anomalies,
            "inbound_dropped": stats.inbound_dropped,
            "local_drops": sum(stats.local_drops.values()),
            # RemoteActorSystem.stats() per peer, by peer name (asks and replies included)
            "stats": {
                names.get(key, f"{key[0]}:{key[1]}"): {
                    "messages_sent": p.messages_sent, "messages_received": p.messages_received,
                    "bytes_sent": p.bytes_sent, "bytes_received": p.bytes_received,
                    "reconnects": p.reconnects, "dropped": p.dropped,
                }
                for key, p in stats.peers.items()
            },
            "connections": len(node._protocols),
            # connections peers dialed to us: they carry the peer's traffic, not ours
            "receive_only": sum(
                1 for p in node._protocols
                if p.context.established and not p.context.outbound
                and all(e.proto is not p for e in node._peers.values())
            ),
            "stray_connections": [
                f"{p.peername} outbound={p.context.outbound} established={p.context.established} "
                f"closed={p.closed} transport={p.transport!r}"
                for p in node._protocols
                if all(e.proto is not p for e in node._peers.values())
                and not (p.context.established and not p.context.outbound)
            ],
            "connected_peers": len(node.connected_peers),
        }


def emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def main(name: str, tells: int, ask_every: int, report_path: str) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"[{name}] %(levelname)s %(name)s: %(message)s")
    soak = Soak(name, tells, ask_every)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    sender: asyncio.Task[None] | None = None
    async with soak.system as system:
        system.spawn(soak.sink(), "sink")
        emit(event="ready", port=system.address.port, extensions=casty.EXTENSIONS_ACTIVE)
        while not done.is_set():
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            cmd = json.loads(line)
            match cmd["cmd"]:
                case "start":
                    for peer, port in cmd["peers"].items():
                        soak.peers[peer] = ("127.0.0.1", port)
                        soak.refs[peer] = system.ref(f"casty://{peer}@127.0.0.1:{port}/user/sink")
                    sender = loop.create_task(soak.send_all())
                case "kill":
                    if soak.sending:
                        soak.kills.append(cmd["peer"])
                    else:
                        soak.counts["kills_skipped"] += 1
                case "report":
                    with open(report_path, "w") as f:
                        json.dump(soak.report(), f)
                    emit(event="reported")
                case "exit":
                    done.set()
        if sender is not None and not sender.done():
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)


if __name__ == "__main__":
    casty.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
