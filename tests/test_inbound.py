"""InboundMessageHandler twins: the same deliveries, drops and log lines for every frame."""

from __future__ import annotations

import json
import logging
import types
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casty.serialization import JsonSerializer, MsgpackSerializer, TypeRegistry
from casty.transport.envelope import MessageEnvelope


@dataclass(frozen=True)
class Tick:
    seq: int
    text: str


@dataclass(frozen=True)
class Nested:
    inner: Tick
    items: tuple[int, ...]


def registry() -> TypeRegistry:
    reg = TypeRegistry()
    reg.register(Tick, "t.Tick")
    reg.register(Nested, "t.Nested")
    return reg


class Local:
    def __init__(self) -> None:
        self.got: list[tuple[str, Any]] = []

    def deliver_path(self, path: str, msg: Any, nbytes: int = -1) -> None:
        self.got.append((path, msg))


def handler(impl: types.SimpleNamespace, serializer: Any = None) -> tuple[Any, Local]:
    local = Local()
    h = impl.InboundMessageHandler(
        local=local, serializer=serializer or MsgpackSerializer(registry()), system_name="app"
    )
    return h, local


def frame(target: str, msg: Any, serializer: Any = None, sender: str = "casty://src@h:2/") -> bytes:
    payload = (serializer or MsgpackSerializer(registry())).serialize(msg)
    return MessageEnvelope(target, sender, payload, "t.hint").to_bytes()


def raw_frame(header: dict[str, Any], payload: bytes) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    return len(text).to_bytes(4, "big") + text + payload


T1 = "casty://app@10.0.0.1:25520/user/a"
T2 = "casty://app@10.0.0.1:25520/user/b"  # same length as T1, one byte apart


def test_canonical_frames_reach_their_paths_in_order(impl: types.SimpleNamespace) -> None:
    h, local = handler(impl)
    msgs = [Tick(i, "x") for i in range(5)]
    for i, m in enumerate(msgs):
        h.on_frame(frame(T1 if i % 2 else T2, m))
    assert local.got == [("/user/b" if i % 2 == 0 else "/user/a", m) for i, m in enumerate(msgs)]
    assert h.dropped == 0


def test_a_repeated_header_and_each_change_of_it_are_routed_right(impl: types.SimpleNamespace) -> None:
    # The handler remembers the last header and the last target; any byte of either
    # that differs must route afresh, and a changed sender keeps the same target.
    h, local = handler(impl)
    other_sender = "casty://src@h:3/"  # same length as the default sender
    plan = [(T1, None), (T1, None), (T2, None), (T2, other_sender), (T1, other_sender), (T1, None),
            ("casty://app@10.0.0.1:25520/user/aa", None), ("casty://zzz@10.0.0.1:25520/user/a", None), (T1, None)]
    for i, (target, sender) in enumerate(plan):
        h.on_frame(frame(target, Tick(i, "x"), sender=sender or "casty://src@h:2/"))
    paths = [p for p, _ in local.got]
    assert paths == ["/user/a", "/user/a", "/user/b", "/user/b", "/user/a", "/user/a", "/user/aa", "/user/a"]
    assert [m.seq for _, m in local.got] == [0, 1, 2, 3, 4, 5, 6, 8]
    assert h.dropped == 1  # the frame for another system


class _Owner:
    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


class RaisingLocal(Local):
    def deliver_path(self, path: str, msg: Any, nbytes: int = -1) -> None:
        if getattr(msg, "seq", None) == 3:
            raise RuntimeError("actor gone mad")
        super().deliver_path(path, msg)


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_frames_split_by_a_protocol_reach_the_handler(
    impl: types.SimpleNamespace, chunk: int, caplog: pytest.LogCaptureFixture
) -> None:
    # The Cython protocol hands a Cython handler whole frames at C level and frames that
    # span chunks as bytes; either way the handler must see the same stream.
    from casty.transport.framing import FRAME_MESSAGE, encode_frame

    local = RaisingLocal()
    h = impl.InboundMessageHandler(local=local, serializer=MsgpackSerializer(registry()), system_name="app")
    proto = impl.FrameProtocol(_Owner())
    proto.set_message_sink(h.on_frame)
    bodies = [frame(T1 if i % 3 else T2, Tick(i, "x" * i)) for i in range(8)]
    bodies.insert(2, b"\x00\x00")  # too short for a header: dropped
    bodies.insert(5, frame("casty://other@h:1/user/a", Tick(99, "z")))  # not ours: dropped
    other_form = {"type_hint": "t", "sender": "s", "target": T1}  # JSON the slow route reads
    bodies.append(raw_frame(other_form, MsgpackSerializer(registry()).serialize(Tick(8, "y"))))
    stream = b"".join(encode_frame(FRAME_MESSAGE, b) for b in bodies)
    for i in range(0, len(stream), chunk):
        proto.data_received(stream[i : i + chunk])
    assert [(p, m.seq) for p, m in local.got] == [
        ("/user/a" if i % 3 else "/user/b", i) for i in range(8) if i != 3
    ] + [("/user/a", 8)]
    assert h.dropped == 2 and proto.frames_received == len(bodies)
    raised = [r for r in caplog.records if r.getMessage().startswith("message sink raised")]
    assert len(raised) == 1 and "actor gone mad" in caplog.text


def test_ask_reply_paths_are_delivered_but_not_cached(impl: types.SimpleNamespace) -> None:
    # Each ask replies to its own /temp/ask-<n> path, used once: remembering those would
    # only fill the cache and push out the lasting targets.
    h, local = handler(impl)
    h.on_frame(frame(T1, Tick(0, "x")))
    for i in range(1, 11):
        h.on_frame(frame(f"casty://app@10.0.0.1:25520/temp/ask-{i}", Tick(i, "x")))
    h.on_frame(frame(T1, Tick(11, "x")))
    assert [p for p, _ in local.got] == ["/user/a"] + [f"/temp/ask-{i}" for i in range(1, 11)] + ["/user/a"]
    assert h.cached_targets == 1


def test_reply_paths_next_to_a_known_node_uri_route_like_any_target(impl: types.SimpleNamespace) -> None:
    # Once a target of this system was seen, the Cython handler reads reply paths on the
    # same node URI straight off the bytes; the look-alikes must still route as parsed.
    h, local = handler(impl)
    head = "casty://app@10.0.0.1:2552"
    targets = [
        f"{head}/user/a",
        f"{head}/temp/ask-1",
        f"{head}0/temp/ask-2",  # a longer port: another node URI, still this system
        f"{head}/temp/",  # nothing after the prefix
        f"{head}/tempx/ask-3",
        "casty://other@10.0.0.1:25520/temp/ask-4",  # another system: dropped
        "casty://ap@10.0.0.1:25520/temp/ask-5",  # dropped too
        f"{head}/temp/ask-6/child",
        f"{head}/user/a",
    ]
    for i, target in enumerate(targets):
        h.on_frame(frame(target, i))
    assert local.got == [
        ("/user/a", 0), ("/temp/ask-1", 1), ("/temp/ask-2", 2), ("/temp/", 3), ("/tempx/ask-3", 4),
        ("/temp/ask-6/child", 7), ("/user/a", 8),
    ]
    assert h.dropped == 2
    assert h.cached_targets == 2  # /user/a and /tempx/ask-3: no reply path, nothing not ours


def test_a_target_with_a_lone_surrogate_routes_alike(impl: types.SimpleNamespace) -> None:
    h, local = handler(impl)
    payload = MsgpackSerializer(registry()).serialize(1)
    header = {"target": "casty://app@h\udc80:1/user/a", "sender": "casty://src@h:2/", "type_hint": "t"}
    h.on_frame(raw_frame(header, payload))  # JSON escapes the surrogate: a valid frame
    h.on_frame(frame("casty://app@h:1/temp/ask-1", 2))
    assert local.got == [("/user/a", 1), ("/temp/ask-1", 2)]


def test_non_plain_and_nested_messages_use_the_serializer(impl: types.SimpleNamespace) -> None:
    h, local = handler(impl)
    msg = Nested(Tick(1, "a"), (1, 2, 3))
    h.on_frame(frame(T1, msg))
    h.on_frame(frame(T1, {"k": [1, 2]}))
    assert local.got == [("/user/a", msg), ("/user/a", {"k": [1, 2]})]


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_bytes_like_frames_and_other_json_forms(impl: types.SimpleNamespace, kind: Any) -> None:
    h, local = handler(impl)
    payload = MsgpackSerializer(registry()).serialize(Tick(1, "a"))
    other_form = raw_frame({"type_hint": "h", "sender": "s", "target": T1}, payload)
    h.on_frame(kind(frame(T2, Tick(0, "z"))))
    h.on_frame(other_form)
    assert local.got == [("/user/b", Tick(0, "z")), ("/user/a", Tick(1, "a"))]


def test_other_serializers_and_subclasses_are_honoured(impl: types.SimpleNamespace) -> None:
    class Counting(MsgpackSerializer):
        calls = 0

        def deserialize(self, data: Any, *, ref_factory: Any = None) -> Any:
            Counting.calls += 1
            return super().deserialize(data, ref_factory=ref_factory)

    h, counted = handler(impl, Counting(registry()))
    h.on_frame(frame(T1, Tick(1, "a")))
    h.on_frame(frame(T1, Tick(1, "a")))  # the plan exists now: a fast path must still ask
    assert Counting.calls == 2 and len(counted.got) == 2
    js = JsonSerializer(registry())
    h2, local2 = handler(impl, js)
    h2.on_frame(frame(T1, Tick(2, "b"), js))
    assert local2.got == [("/user/a", Tick(2, "b"))]


BAD = [
    b"\x00\x00",  # no room for the header length
    b"\x00\x00\x00\x09{}",  # header length past the end
    raw_frame({"target": 1, "sender": "s", "type_hint": "h"}, b"\xc0"),  # not a str
    frame("casty://other@h:1/user/a", 1),  # another system
    frame("not a uri", 1),
    frame(T1, 1)[:-1] + b"\xc1",  # payload byte msgpack never writes
    MessageEnvelope(T1, "s", b"\xc7\x03\x01\x91\xa1z", "h").to_bytes(),  # unknown type name
]


@pytest.mark.parametrize("data", BAD, ids=range(len(BAD)))
def test_bad_frames_are_dropped_and_logged_identically(
    impl: types.SimpleNamespace, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="casty.transport.inbound")
    h, local = handler(impl)
    h.on_frame(data)
    h.on_frame(frame(T1, Tick(9, "ok")))  # the next good frame still arrives
    assert local.got == [("/user/a", Tick(9, "ok"))]
    assert h.dropped == 1
    [record] = caplog.records
    from casty.transport import inbound as pure

    ph, _ = handler(types.SimpleNamespace(InboundMessageHandler=pure.InboundMessageHandler))
    caplog.clear()
    ph.on_frame(data)
    assert [r.getMessage() for r in caplog.records] == [record.getMessage()]


def test_drops_log_at_powers_of_two(impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="casty.transport.inbound")
    h, _ = handler(impl)
    for _ in range(9):
        h.on_frame(BAD[0])
    assert h.dropped == 9
    assert [r.getMessage().rsplit("(", 1)[1] for r in caplog.records] == [
        f"{n} dropped so far)" for n in (1, 2, 4, 8)
    ]


FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150)


@FIXTURE_OK
@given(st.lists(st.tuples(st.sampled_from([T1, T2, "casty://app/user/c", "casty://x/y"]),
                          st.integers(0, 3), st.binary(max_size=3), st.integers(0, 60)), max_size=8))
def test_twins_agree_on_mutated_streams(impl: types.SimpleNamespace, edits: list[Any]) -> None:
    from casty.transport import inbound as pure

    h, local = handler(impl)
    ph, plocal = handler(types.SimpleNamespace(InboundMessageHandler=pure.InboundMessageHandler))
    for target, which, noise, at in edits:
        msg = [Tick(at, "t"), Nested(Tick(1, "n"), (at,)), at, None][which]
        data = frame(target, msg)
        data = data[:at] + noise + data[at + len(noise):]
        h.on_frame(data)
        ph.on_frame(data)
    assert local.got == plocal.got
    assert h.dropped == ph.dropped


# -- untrusted peers ------------------------------------------------------------------------


class Origin:
    """What the node tells the handler of a connection: its claim and its bad frames."""

    def __init__(self, key: tuple[str, int]) -> None:
        self.peer_key = key
        self.dial_key = None
        self.bad = 0

    def frame_dropped(self) -> None:
        self.bad += 1


def test_reply_paths_are_delivered_only_when_the_reply_check_allows(impl: types.SimpleNamespace) -> None:
    h, local = handler(impl)
    calls: list[tuple[str, Any]] = []

    def check(path: str, origin: Any) -> str | None:
        calls.append((path, origin))
        return None if origin is not None and origin.peer_key == ("10.0.0.2", 1) else "not from there"

    h.reply_check = check
    good, bad = Origin(("10.0.0.2", 1)), Origin(("10.0.0.9", 1))
    head = "casty://app@10.0.0.1:2552"
    h.on_frame(frame(f"{head}/user/a", 0))  # a known node URI: reply paths then read off the bytes
    h.sink_for(bad)(frame(f"{head}/temp/ask-1-aa", 1))
    h.sink_for(good)(frame(f"{head}/temp/ask-2-bb", 2))
    h.sink_for(bad)(frame("casty://app@10.0.0.3:1/temp/ask-3-cc", 3))  # a reply path parsed the slow way
    h.sink_for(good)(raw_frame({"type_hint": "t", "target": f"{head}/temp/ask-4-dd", "sender": "s"},
                               MsgpackSerializer(registry()).serialize(4)))
    assert local.got == [("/user/a", 0), ("/temp/ask-2-bb", 2), ("/temp/ask-4-dd", 4)]
    assert [c[0] for c in calls] == ["/temp/ask-1-aa", "/temp/ask-2-bb", "/temp/ask-3-cc", "/temp/ask-4-dd"]
    assert (bad.bad, good.bad, h.dropped) == (2, 0, 2)
    assert h.origin is None  # only set while a frame of a connection is handled


def test_system_paths_are_refused_to_peers(impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    h, local = handler(impl)
    for i in range(3):
        h.on_frame(frame("casty://app@h:1/system/tcp", i))
    assert local.got == [] and h.dropped == 3
    assert "is a system actor, which peers may not message" in caplog.text
    opened = impl.InboundMessageHandler(
        local=local, serializer=MsgpackSerializer(registry()), system_name="app", allow_system_paths=True
    )
    opened.on_frame(frame("casty://app@h:1/system/tcp", 9))
    assert local.got == [("/system/tcp", 9)]


def test_the_target_cache_holds_only_short_targets_of_this_system(impl: types.SimpleNamespace) -> None:
    h, local = handler(impl)
    for i in range(50):
        h.on_frame(frame(f"casty://other@h:1/user/a{i}", i))  # another system's: dropped, not remembered
    assert h.cached_targets == 0 and h.dropped == 50
    long_target = "casty://app@h:1/user/" + "x" * 5000
    h.on_frame(frame(long_target, 1))
    assert local.got == [("/user/" + "x" * 5000, 1)] and h.cached_targets == 0
    h.on_frame(frame("casty://app@h:1/user/a", 2))
    assert h.cached_targets == 1


def test_the_target_cache_is_bounded_in_characters(impl: types.SimpleNamespace) -> None:
    from casty.transport.inbound import MAX_CACHED_TARGET_CHARS

    h, _local = handler(impl)
    target_length = 1000
    fits = MAX_CACHED_TARGET_CHARS // target_length
    for i in range(fits + 5):
        prefix = f"casty://app@h:1/user/{i}-"
        h.on_frame(frame(prefix + "y" * (target_length - len(prefix)), i))
    assert h.cached_targets <= fits
    assert h.cached_targets < fits + 5
