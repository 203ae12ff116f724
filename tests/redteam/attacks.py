"""The attacks of issue 20, each a coroutine playing one malicious peer against the victim.

Each takes a :class:`Ctx` and returns its own table rows (what it sent, what it saw); the
driver adds the rows every attack gets (spoofed replies, loop stall, RSS, healthy failures).
Every loop is bounded in count and in time (``ctx.budget`` seconds), every socket is on
127.0.0.1, and every address an attack claims or names belongs to :class:`~wire.PortPool`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from casty import FRAME_MESSAGE, ActorAddress, LocalActorRef, MessageEnvelope, MsgpackSerializer
from tests.redteam.node import FORGED
from tests.redteam.wire import (
    PortPool,
    Raw,
    encoded,
    frame,
    handshake,
    message,
    message_prefix,
    raw_handshake,
)
from tests.remote_helpers import Echo, registry

MiB = 1024 * 1024
#: a log line an attacker tries to plant through a handshake host
FORGED_LOG = "REDTEAM-FORGED-LINE"

Row = tuple[str, Any, str, bool | None]  # metric, value, bar, whether the bar is met (None: no bar)


class _Nowhere:
    """The transport of refs the attacker only encodes or reads: telling them does nothing."""

    def deliver(self, address: ActorAddress, msg: Any) -> None:
        pass


def _ref(address: ActorAddress) -> LocalActorRef[Any]:
    return LocalActorRef(address, _Nowhere())


@dataclass
class Ctx:
    victim_name: str
    victim_port: int
    healthy_name: str
    healthy_port: int
    victim: Any  # redteam.NodeProc
    pool: PortPool
    quick: bool
    budget: float  # seconds the attack may send for
    notes: list[str] = field(default_factory=list)

    def uri(self, path: str, system: str | None = None) -> str:
        return f"casty://{system or self.victim_name}@127.0.0.1:{self.victim_port}{path}"

    async def handshaken(self, claim_port: int | None = None) -> Raw:
        """A connection that handshook as a pool address (nobody listens there)."""
        raw = await Raw.connect(self.victim_port)
        port = claim_port if claim_port is not None else self.pool.take(1)[0]
        await raw.send(handshake("127.0.0.1", port))
        if not await raw.handshake_answered():
            raw.close()
            raise RuntimeError(f"the victim did not answer a plain handshake claiming 127.0.0.1:{port}")
        return raw


def scaled(ctx: Ctx, full: int, quick: int) -> int:
    return quick if ctx.quick else full


async def timed_sends(ctx: Ctx, count: int, send_one: Callable[[int], Awaitable[bool]]) -> tuple[int, float, str]:
    """Call ``send_one(i)`` for i < count until it fails or ``ctx.budget`` runs out."""
    started = time.monotonic()
    sent, why = 0, "all sent"
    try:
        async with asyncio.timeout(ctx.budget):
            for i in range(count):
                if not await send_one(i):
                    why = "connection closed by the victim"
                    break
                sent += 1
    except TimeoutError:
        why = f"stopped after the {ctx.budget:.0f}s budget"
    return sent, time.monotonic() - started, why


# -- 1. replies sprayed at the ask reply paths -------------------------------------------------------


async def spray_ask_paths(ctx: Ctx) -> list[Row]:
    n = scaled(ctx, 10_000, 2_000)
    # Today's reply paths count up from 0; start at the victim's count of asks made so far.
    base = ctx.victim.last["asks"]["started"]
    payload = encoded(FORGED)
    data = b"".join(message(ctx.uri(f"/temp/ask-{i}"), payload, "builtins.str") for i in range(base, base + n))
    raw = await ctx.handshaken()
    try:
        await raw.send(data)
        await asyncio.sleep(min(3.0, ctx.budget))
    finally:
        raw.close()
    return [("frames sprayed", f"{n:,} to /temp/ask-{base}..{base + n - 1} ({len(data) / MiB:.1f} MiB)", "", None)]


# -- 2. a handshake claiming the healthy peer's address ----------------------------------------------


async def claim_healthy_address(ctx: Ctx) -> list[Row]:
    every = 0.25
    claims = scaled(ctx, 12, 4)
    serializer = MsgpackSerializer(registry())
    forged = encoded(FORGED)
    counts = {"answered": 0, "frames": 0, "forged": 0}

    async def serve(raw: Raw) -> None:
        if await raw.handshake_answered(1.0):
            counts["answered"] += 1
        while True:
            got = await raw.read_frame(30)
            if got is None:
                return
            kind, body = got
            if kind != FRAME_MESSAGE:
                continue
            counts["frames"] += 1  # the victim sent it to the healthy peer's address
            try:
                msg = serializer.deserialize(MessageEnvelope.from_bytes(body).payload, ref_factory=_ref)
            except ValueError:
                continue
            if isinstance(msg, Echo) and isinstance(msg.reply_to, LocalActorRef):
                if await raw.send(message(msg.reply_to.address.to_uri(), forged, "builtins.str")):
                    counts["forged"] += 1

    raws: list[Raw] = []
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    try:
        for _ in range(claims):
            raw = await Raw.connect(ctx.victim_port)
            raws.append(raw)
            await raw.send(handshake("127.0.0.1", ctx.healthy_port))
            tasks.append(loop.create_task(serve(raw)))
            await asyncio.sleep(every)
        await asyncio.sleep(0.5)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for raw in raws:
            raw.close()
    return [
        ("claims of the healthy peer's address", f"{claims}, one each {every}s", "", None),
        # Answering a handshake gives nothing: what counts is whose traffic the claimant gets.
        ("claims answered (the connection stays receive-only)", counts["answered"], "", None),
        ("traffic to claimant (frames meant for A)", counts["frames"], "0", counts["frames"] == 0),
        ("forged replies sent back", counts["forged"], "", None),
    ]


# -- 3. a set of colliding ints -----------------------------------------------------------------------

_P = 2**61 - 1  # hash(n) == hash(n + k * _P) for ints


def _as_set(items: list[int]) -> bytes:
    """The msgpack payload of ``set(items)``, without building the set here (that would take
    the attacker as long as it takes the victim): a tuple's ext with its code changed to a set's."""
    data = bytearray(encoded(tuple(items)))
    at = {0xC8: 3, 0xC9: 5}.get(data[0])  # where ext 16 and ext 32 keep their type code
    if at is None or data[at] != 3:
        raise ValueError("expected the tuple as an ext 16 or ext 32")
    data[at] = 4
    return bytes(data)


async def colliding_set(ctx: Ctx) -> list[Row]:
    target = scaled(ctx, 400_000, 60_000)
    sample = 1_000  # bytes per element, measured on elements as large as the last ones
    n = target * sample // len(encoded(tuple(1 + k * _P for k in range(40_000 - sample, 40_000))))
    collide = _as_set([1 + k * _P for k in range(n)])
    rng = random.Random(20)
    # The same count of ints of the same encoded size, with ordinary hashes.
    control = _as_set(list({(1 << 76) | rng.getrandbits(75) for _ in range(n + 100)})[:n])
    raw = await ctx.handshaken()
    try:
        t0 = time.monotonic()
        await raw.send(message(ctx.uri("/user/sink"), control, "builtins.set"))
        await asyncio.sleep(1.0)
        control_stall = await ctx.victim.stall_since(t0, wait=10)
        await raw.send(message(ctx.uri("/user/sink"), collide, "builtins.set"))
        # The victim decodes the frame as soon as it is in; wait for its next report (bounded).
        await ctx.victim.report_after(time.monotonic() + 0.2, timeout=max(ctx.budget, 10))
    finally:
        raw.close()
    return [
        ("colliding set", f"{n:,} ints, {len(collide) / 1000:.0f} KB", "", None),
        ("stall for an ordinary set of the same size (ms)", control_stall, "", None),
    ]


# -- 4. memory floods ---------------------------------------------------------------------------------


async def _flood(ctx: Ctx, count: int, size: int, target: Callable[[int], str]) -> list[Row]:
    payload = memoryview(encoded(b"x" * size))
    raw = await ctx.handshaken()

    async def one(i: int) -> bool:
        return await raw.send(message_prefix(target(i), len(payload), "builtins.bytes"), payload)

    try:
        sent, took, why = await timed_sends(ctx, count, one)
    finally:
        raw.close()
    return [("messages sent", f"{sent:,} of {count:,} x {size / MiB:g} MiB in {took:.1f}s ({why})", "", None)]


async def flood_unknown_paths(ctx: Ctx) -> list[Row]:
    return await _flood(ctx, scaled(ctx, 1_500, 100), MiB, lambda i: ctx.uri(f"/user/nobody-{i}"))


async def flood_long_targets(ctx: Ctx) -> list[Row]:
    n = scaled(ctx, 1_000, 100)
    pad = "a" * (256 * 1024)
    raw = await ctx.handshaken()
    payload = encoded(1)

    async def one(i: int) -> bool:  # another system's name: no actor gets it, only the cache
        return await raw.send(message(ctx.uri(f"/user/{pad}{i}", system=f"other{i}"), payload, "builtins.int"))

    try:
        sent, took, why = await timed_sends(ctx, n, one)
    finally:
        raw.close()
    return [("messages sent", f"{sent:,} of {n:,} with 256 KiB targets in {took:.1f}s ({why})", "", None)]


async def big_frames_before_handshake(ctx: Ctx) -> list[Row]:
    conns = scaled(ctx, 100, 8)
    size = 16 * MiB  # the default max_frame_size: the largest frame the victim accepts
    body = memoryview(bytes(size - 2))  # one byte short of complete: held until the handshake timeout
    head = (size).to_bytes(4, "big") + b"\x00"
    started = time.monotonic()
    raws = list(await asyncio.gather(*(Raw.connect(ctx.victim_port) for _ in range(conns))))

    async def one(raw: Raw) -> bool:
        return await raw.send(head, body)

    try:
        async with asyncio.timeout(ctx.budget):  # all at once: the victim holds them together
            sent = sum(await asyncio.gather(*(one(r) for r in raws)))
        why = "the rest cut off by the victim mid-frame" if sent < conns else "all sent"
    except TimeoutError:
        sent, why = -1, f"stopped after the {ctx.budget:.0f}s budget"
    took = time.monotonic() - started
    try:
        async with asyncio.timeout(12):  # the victim's default handshake_timeout is 5 s
            while not all(r.peer_closed() for r in raws):
                await asyncio.sleep(0.1)
    except TimeoutError:
        pass
    held = time.monotonic() - started
    still_open = sum(not r.peer_closed() for r in raws)
    for raw in raws:
        raw.close()
    done = "?" if sent < 0 else str(sent)
    return [
        ("frames started", f"{done} of {conns} x 16 MiB sent whole but for 1 byte, in {took:.1f}s ({why})", "", None),
        ("connections closed by the victim", f"{conns - still_open} of {conns} after {held:.1f}s", "", None),
    ]


async def flood_slow_mailbox(ctx: Ctx) -> list[Row]:
    rows = await _flood(ctx, scaled(ctx, 1_000, 50), MiB, lambda i: ctx.uri("/user/slow"))
    rows.append(("messages the slow actor handled (50 ms each)", ctx.victim.last["slow_handled"], "", None))
    return rows


async def dial_unreachable(ctx: Ctx) -> list[Row]:
    n = scaled(ctx, 2_000, 100)
    ports = ctx.pool.take(n)  # refused at once: bound here, never listened on
    serializer = MsgpackSerializer(registry())
    before = dict(ctx.victim.last["failures"])
    raw = await ctx.handshaken()

    async def one(i: int) -> bool:
        reply_to = _ref(ActorAddress.from_uri(f"casty://ghost@127.0.0.1:{ports[i]}/user/r"))
        payload = serializer.serialize(Echo("x", reply_to))
        return await raw.send(message(ctx.uri("/user/echo"), payload, "tests.remote_helpers.Echo"))

    try:
        sent, took, why = await timed_sends(ctx, n, one)
        await asyncio.sleep(1.5)
    finally:
        raw.close()
    after = ctx.victim.last["failures"]
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    dialed = delta.get("connect_failed", 0)
    return [
        ("asks with unreachable reply_to", f"{sent:,} distinct addresses in {took:.1f}s ({why})", "", None),
        ("dials made (connect failures reported)", dialed, "0 unless allowed", dialed == 0),
        ("send failures by reason", delta or "none", "", None),
    ]


# -- 5. one connection holding the loop ----------------------------------------------------------------


async def _stream(ctx: Ctx, raw: Raw, chunk: bytes, what: str) -> list[Row]:
    """Send ``chunk`` (~4 MB, one write) every second for the budget, or until the victim closes."""
    rate_every = 1.0
    sent = 0
    started = time.monotonic()
    closed = False
    while time.monotonic() - started < ctx.budget:
        try:
            async with asyncio.timeout(ctx.budget):
                if not await raw.send(chunk):
                    closed = True
                    break
        except TimeoutError:
            break
        sent += len(chunk)
        await asyncio.sleep(rate_every)
    closed = closed or raw.peer_closed()
    raw.close()
    took = time.monotonic() - started
    return [
        (what, f"{sent / 1e6:.1f} MB in {took:.1f}s", "", None),
        ("connection closed by the victim", "yes" if closed else "no", "yes", closed),
    ]


async def undecodable_stream(ctx: Ctx) -> list[Row]:
    sink = ctx.uri("/user/sink")
    bodies = [
        message(sink, b"\xc1", "builtins.str"),  # not msgpack
        message(ctx.uri("/user/sink", system="other"), encoded(1), "builtins.int"),  # not ours
        message(sink, encoded(("x",)) + b"\x00", "builtins.tuple"),  # trailing bytes
        message(sink, b"\xd4\x63\x00", "x.Y"),  # unknown ext type
    ]
    one = b"".join(bodies)
    chunk = one * (4_000_000 // len(one))
    raw = await ctx.handshaken()
    return await _stream(ctx, raw, chunk, "undecodable frames sent (~4 MB/s)")


async def unknown_frames_before_handshake(ctx: Ctx) -> list[Row]:
    one = frame(0x7F, b"x")
    chunk = one * (4_000_000 // len(one))
    raw = await Raw.connect(ctx.victim_port)
    return await _stream(ctx, raw, chunk, "unknown-type frames sent, no handshake (~4 MB/s)")


# -- 6. system actors, logs, handshake fields, idle connections -----------------------------------------


async def system_tcp(ctx: Ctx) -> list[Row]:
    return await _flood(ctx, scaled(ctx, 100, 10), MiB, lambda i: ctx.uri("/system/tcp"))


async def bad_handshake_hosts(ctx: Ctx) -> list[Row]:
    hosts = [f"127.0.0.1\n{FORGED_LOG} ERROR casty: a line the peer wrote", "127.0.0.1\x00nul"]
    ports = ctx.pool.take(len(hosts))
    accepted = 0
    for host, port in zip(hosts, ports, strict=True):
        raw = await Raw.connect(ctx.victim_port)
        await raw.send(handshake(host, port))
        accepted += await raw.handshake_answered(1.5)
        raw.close()
    await asyncio.sleep(0.3)
    return [("handshakes with newline / NUL hosts taken", f"{accepted} of {len(hosts)}", "0", accepted == 0)]


async def long_port(ctx: Ctx) -> list[Row]:
    accepted = 0
    sizes = (4_300, 4_301)  # 4,301 digits is past int()'s default limit for str conversion
    for digits in sizes:
        raw = await Raw.connect(ctx.victim_port)
        await raw.send(raw_handshake('{"host": "127.0.0.1", "port": 1' + "0" * (digits - 1) + "}"))
        accepted += await raw.handshake_answered(1.5)
        raw.close()
    await asyncio.sleep(0.3)
    return [("handshakes with 4,300 / 4,301-digit ports taken", f"{accepted} of {len(sizes)}", "0", accepted == 0)]


def idle_connection_count(fd_soft_limit: int) -> int:
    """2,000, or fewer so this process and the victim stay well under the fd limit."""
    return max(10, min(2_000, (fd_soft_limit - 4_000) // 2))


async def idle_connections(ctx: Ctx) -> list[Row]:
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    n = scaled(ctx, idle_connection_count(soft), 50)
    if n < 2_000 and not ctx.quick:
        ctx.notes.append(f"idle connections capped at {n} (fd soft limit {soft})")
    ports = ctx.pool.take(n)
    raws: list[Raw] = []
    answered = 0

    async def one(port: int) -> bool:
        raw = await Raw.connect(ctx.victim_port)
        raws.append(raw)
        await raw.send(handshake("127.0.0.1", port))
        return await raw.handshake_answered(3.0)

    started = time.monotonic()
    try:
        async with asyncio.timeout(ctx.budget):
            for i in range(0, n, 100):  # at most 100 handshakes under way at once
                answered += sum(await asyncio.gather(*(one(p) for p in ports[i : i + 100])))
    except TimeoutError:
        pass
    opened = time.monotonic() - started
    hold = 3.0
    await asyncio.sleep(hold)
    still_open = sum(not r.peer_closed() for r in raws)
    fresh = await Raw.connect(ctx.victim_port)
    await fresh.send(handshake("127.0.0.1", ctx.pool.take(n + 1)[-1]))
    fresh_ok = await fresh.handshake_answered(3.0)
    fresh.close()
    fds = ctx.victim.last["fds"]
    for raw in raws:
        raw.close()
    return [
        ("idle connections opened (handshaken)", f"{answered} of {n} in {opened:.1f}s", "", None),
        (f"still open after {hold:.0f}s idle", still_open, "", None),
        ("victim's open fds while held", fds, "", None),
        ("a new peer can still connect", "yes" if fresh_ok else "no", "yes", fresh_ok),
    ]


@dataclass(frozen=True)
class Attack:
    key: str
    title: str
    run: Callable[[Ctx], Awaitable[list[Row]]]
    budget: float  # seconds the attack may send for
    memory: bool = False  # a flood: RSS after must come back within 50 MiB of the start


ATTACKS = [
    Attack("spray", "1 replies sprayed at /temp/ask-N", spray_ask_paths, 3.0),
    Attack("claim", "2 handshake claiming A's address", claim_healthy_address, 4.0),
    Attack("collide", "3 colliding-int set (~400 KB)", colliding_set, 30.0),
    Attack("unknown-paths", "4a 1 MiB messages to unknown paths", flood_unknown_paths, 12.0, memory=True),
    Attack("long-targets", "4b 256 KiB target URIs", flood_long_targets, 10.0, memory=True),
    Attack("big-prehandshake", "4c 16 MiB frames before handshake", big_frames_before_handshake, 10.0, memory=True),
    Attack("slow-mailbox", "4d flood of a slow actor's mailbox", flood_slow_mailbox, 4.0, memory=True),
    Attack("dial", "4e reply_to at unreachable addresses", dial_unreachable, 6.0, memory=True),
    Attack("undecodable", "5a undecodable message frames", undecodable_stream, 4.0),
    Attack("unknown-type", "5b unknown-type frames, no handshake", unknown_frames_before_handshake, 4.0),
    Attack("system-tcp", "6a 1 MiB messages to /system/tcp", system_tcp, 8.0),
    Attack("bad-host", "6b handshake host with newline/NUL", bad_handshake_hosts, 4.0),
    Attack("long-port", "6c handshake port of 4,300+ digits", long_port, 4.0),
    Attack("idle", "6d thousands of idle handshaken connections", idle_connections, 15.0),
]
QUICK = ("spray", "undecodable")
