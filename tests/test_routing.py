"""RemoteTransport's routing rules (docs/architecture.md), including its cached last route."""

from __future__ import annotations

from typing import Any

from casty import ActorAddress, MsgpackSerializer, RemoteTransport
from casty.transport.envelope import MessageEnvelope
from casty.transport.messages import SendFailure, SendToNode


class Recorder:
    """Plays both the LocalTransport and the tcp actor ref."""

    def __init__(self) -> None:
        self.local: list[tuple[ActorAddress, Any]] = []
        self.sent: list[tuple[str, int, str]] = []

    def deliver(self, address: ActorAddress, msg: Any) -> None:
        self.local.append((address, msg))

    def tell(self, msg: SendToNode) -> None:
        self.sent.append((msg.host, msg.port, MessageEnvelope.from_bytes(msg.data).target))


def transport(**kw: Any) -> tuple[RemoteTransport, Recorder, list[SendFailure]]:
    rec = Recorder()
    failures: list[SendFailure] = []
    # With a serializer and no node, remote messages reach the tcp actor as SendToNode.
    rt = RemoteTransport(local=rec, tcp=rec, local_host="10.0.0.1", local_port=7000, system_name="app",
                         on_send_failure=failures.append, serializer=MsgpackSerializer(), **kw)  # type: ignore[arg-type]
    return rt, rec, failures


def test_addresses_without_host_or_with_our_host_port_are_local() -> None:
    rt, rec, _ = transport(advertised_host="public", advertised_port=80, local_node_id="me")
    for a in (ActorAddress("app", "/user/a"), ActorAddress("app", "/user/b", "10.0.0.1", 7000),
              ActorAddress("app", "/user/c", "public", 80), ActorAddress("app", "/user/d", "x", 1, "me")):
        rt.deliver(a, 1)
    assert [a.path for a, _ in rec.local] == ["/user/a", "/user/b", "/user/c", "/user/d"]
    assert rec.sent == []


def test_other_nodes_get_envelopes_with_their_uri() -> None:
    rt, rec, _ = transport()
    a = ActorAddress("app", "/user/a", "10.0.0.2", 7000)
    b = ActorAddress("app", "/user/b", "10.0.0.3", 7001)
    for addr in (a, a, b, a):
        rt.deliver(addr, 1)
    assert rec.sent == [("10.0.0.2", 7000, a.to_uri()), ("10.0.0.2", 7000, a.to_uri()),
                        ("10.0.0.3", 7001, b.to_uri()), ("10.0.0.2", 7000, a.to_uri())]


def test_node_ids_resolve_through_the_index_and_follow_its_updates() -> None:
    rt, rec, failures = transport()
    a = ActorAddress("app", "/user/a", node_id="n2")  # node id only
    rt.deliver(a, 1)
    assert failures and failures[0].reason == "unknown_node" and rec.sent == []
    rt.update_node_index({"n2": ("10.0.0.2", 7000)})
    rt.deliver(a, 1)
    rt.update_node_index({"n2": ("10.0.0.9", 7009)})  # the same address object, a new route
    rt.deliver(a, 1)
    rt.update_node_index({"n2": ("10.0.0.1", 7000)})  # now ours
    rt.deliver(a, 1)
    assert [(h, p) for h, p, _ in rec.sent] == [("10.0.0.2", 7000), ("10.0.0.9", 7009)]
    assert [x.path for x, _ in rec.local] == ["/user/a"]


def test_the_tcp_actor_gets_a_large_message_as_one_bytes() -> None:
    # The writer may hand back a large message in pieces; SendToNode carries bytes.
    got: list[SendToNode] = []
    rec = Recorder()
    rec.tell = got.append  # type: ignore[method-assign]
    rt = RemoteTransport(local=rec, tcp=rec, local_host="10.0.0.1", local_port=7000,  # type: ignore[arg-type]
                         system_name="app", serializer=MsgpackSerializer())
    big = b"\x01" * 200_000
    rt.deliver(ActorAddress("app", "/user/a", "10.0.0.2", 7000), big)
    assert len(got) == 1 and type(got[0].data) is bytes
    env = MessageEnvelope.from_bytes(got[0].data)
    assert rt._writer is not None and rt._writer.serializer.deserialize(env.payload) == big


def test_unknown_node_id_with_a_host_goes_to_that_host() -> None:
    rt, rec, failures = transport()
    rt.deliver(ActorAddress("app", "/user/a", "10.0.0.5", 7005, "n5"), 1)
    assert [(h, p) for h, p, _ in rec.sent] == [("10.0.0.5", 7005)] and failures == []


def test_make_ref_follows_the_routing_rules() -> None:
    from casty.ref import LocalActorRef, RemoteActorRef

    rt, _, _ = transport(advertised_host="public", advertised_port=80, local_node_id="me")
    rt.update_node_index({"n2": ("10.0.0.2", 7000), "n3": ("public", 80)})
    local = [ActorAddress("app", "/user/a"), ActorAddress("app", "/b", "10.0.0.1", 7000),
             ActorAddress("app", "/c", "public", 80), ActorAddress("app", "/d", "x", 1, "me"),
             ActorAddress("app", "/e", node_id="n3")]
    remote = [ActorAddress("app", "/f", "10.0.0.1", 7001), ActorAddress("app", "/g", "public", 81),
              ActorAddress("app", "/h", "10.0.0.1", 7000, "n2"), ActorAddress("app", "/i", node_id="n9")]
    assert [type(rt.make_ref(a)) for a in local] == [LocalActorRef] * len(local)
    assert [type(rt.make_ref(a)) for a in remote] == [RemoteActorRef] * len(remote)
    assert all(rt.make_ref(a).address is a for a in local + remote)


def test_ask_reply_addresses_do_not_displace_the_cached_route() -> None:
    rt, rec, _ = transport()
    a = ActorAddress("app", "/user/a", "10.0.0.2", 7000)
    rt.deliver(a, 1)
    for i in range(3):
        rt.deliver(ActorAddress("app", f"/temp/ask-{i}", "10.0.0.3", 7001), i)
    rt.deliver(a, 2)
    assert rt._last is not None and rt._last[0] is a
    assert rec.sent[1:4] == [("10.0.0.3", 7001, f"casty://app@10.0.0.3:7001/temp/ask-{i}") for i in range(3)]
    assert rt._targets == {a: a.to_uri()}


def test_the_outbound_target_cache_keeps_no_long_target_and_is_bounded_in_characters() -> None:
    from casty.wire import MAX_CACHED_TARGET_CHARS

    t, _local, _tcp = transport()
    long_address = ActorAddress("b", "/user/" + "x" * 5000, "10.0.0.2", 1)
    t.deliver(long_address, 1)
    assert long_address not in t._targets
    for i in range(MAX_CACHED_TARGET_CHARS // 900 + 10):
        t.deliver(ActorAddress("b", f"/user/{i}-" + "y" * 870, "10.0.0.2", 1), i)
    assert t._target_chars <= MAX_CACHED_TARGET_CHARS
    assert sum(len(v) for v in t._targets.values()) == t._target_chars
