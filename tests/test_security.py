"""Security: mutual TLS refuses strangers, decoding never runs or imports what a peer names,
and no pickle serializer is offered."""

from __future__ import annotations

import ast
import asyncio
import importlib
import json
import pkgutil
import re
import ssl
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

import casty
from casty import (
    FRAME_HANDSHAKE,
    FRAME_MESSAGE,
    JsonSerializer,
    MessageEnvelope,
    MsgpackSerializer,
    SerializationError,
    Serializer,
    TypeRegistry,
)
from tests.remote_helpers import Collector, Ping, registry
from tests.test_remote import Failures, frame, node, read_frame, wait_until

# -- (a) mutual TLS ------------------------------------------------------------------------


class Pki:
    """Our CA (server and client certs) and a rogue CA issuing look-alike certs."""

    def __init__(self) -> None:
        trustme = pytest.importorskip("trustme")
        self.ca = trustme.CA()
        self.rogue = trustme.CA()
        self.server_cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.client_cert = self.ca.issue_cert("client.casty.test", "127.0.0.1", "localhost")
        self.rogue_client_cert = self.rogue.issue_cert("client.casty.test", "127.0.0.1", "localhost")
        self.rogue_server_cert = self.rogue.issue_cert("127.0.0.1", "localhost")

    def server(self, *, rogue: bool = False) -> ssl.SSLContext:
        """A server context requiring a client certificate signed by our CA."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        (self.rogue_server_cert if rogue else self.server_cert).configure_cert(ctx)
        self.ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client(self, cert: str) -> ssl.SSLContext:
        """A client context trusting our CA, presenting ``cert``: "ours", "rogue" or "none"."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.ca.configure_trust(ctx)
        if cert == "ours":
            self.client_cert.configure_cert(ctx)
        elif cert == "rogue":
            self.rogue_client_cert.configure_cert(ctx)
        return ctx


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.mark.parametrize("cert", ["none", "rogue"])
async def test_mutual_tls_refuses_a_peer_without_a_certificate_of_our_ca(pki: Pki, cert: str) -> None:
    failures = Failures()
    async with node("b", server_ssl=pki.server()) as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        # connect_timeout: a refused TLS client cannot tell a refusal from losing a connect race
        async with node("a", client_ssl=pki.client(cert), on_send_failure=failures, connect_timeout=0.5) as a:
            for i in range(3):
                a.ref(b.address.with_path("/user/sink")).tell(Ping(i))
            await failures.wait(1)
            assert (failures[0].reason, failures[0].count) == ("connect_failed", 3)
            assert a.node.connected_peers == [] and b.node.connected_peers == []
        assert got.items == []
        # the same server still serves a peer whose certificate our CA signed
        async with node("c", client_ssl=pki.client("ours")) as c:
            c.ref(b.address.with_path("/user/sink")).tell(Ping(7))
            assert await got.wait(1) == [Ping(7)]


async def test_mutual_tls_client_refuses_a_server_signed_by_another_ca(pki: Pki) -> None:
    failures = Failures()
    async with node("b", server_ssl=pki.server(rogue=True)) as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        async with node("a", client_ssl=pki.client("ours"), on_send_failure=failures, connect_timeout=0.5) as a:
            a.ref(b.address.with_path("/user/sink")).tell(Ping(1))
            await failures.wait(1)
            assert failures[0].reason == "connect_failed"
            assert "CERTIFICATE_VERIFY_FAILED" in failures[0].detail
        assert got.items == []


@pytest.mark.parametrize("cert", ["none", "rogue"])
async def test_pipelined_frames_from_a_refused_client_never_reach_an_actor(pki: Pki, cert: str) -> None:
    # Under TLS 1.3 the client finishes its side before the server has checked its
    # certificate, so it can send frames at once: they must still go nowhere.
    async with node("b", server_ssl=pki.server()) as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        reader, writer = await casty_tls_connect(b.address.port, pki.client(cert))
        payload = MsgpackSerializer(registry()).serialize(Ping(1))
        env = MessageEnvelope(b.address.with_path("/user/sink").to_uri(), "casty://x@127.0.0.9:1/",
                              payload, "tests.remote_helpers.Ping")
        writer.write(frame(FRAME_HANDSHAKE, json.dumps({"host": "127.0.0.9", "port": 1}).encode())
                     + frame(FRAME_MESSAGE, env.to_bytes()))
        with pytest.raises((ssl.SSLError, ConnectionError, EOFError)):  # refused: no casty answer
            await read_frame(reader)
        writer.close()
        await wait_until(lambda: not b.node._protocols)
        assert got.items == [] and b.node.connected_peers == []


async def test_pipelined_frames_from_an_accepted_client_arrive(pki: Pki) -> None:
    async with node("b", server_ssl=pki.server()) as b:  # the control for the test above
        got = Collector()
        b.spawn(got.behavior(), "sink")
        reader, writer = await casty_tls_connect(b.address.port, pki.client("ours"))
        payload = MsgpackSerializer(registry()).serialize(Ping(1))
        env = MessageEnvelope(b.address.with_path("/user/sink").to_uri(), "casty://x@127.0.0.9:1/",
                              payload, "tests.remote_helpers.Ping")
        writer.write(frame(FRAME_HANDSHAKE, json.dumps({"host": "127.0.0.1", "port": 1}).encode())
                     + frame(FRAME_MESSAGE, env.to_bytes()))
        assert (await read_frame(reader))[0] == FRAME_HANDSHAKE
        assert await got.wait(1) == [Ping(1)]
        writer.close()


async def casty_tls_connect(port: int, ctx: ssl.SSLContext) -> Any:
    return await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")


# -- (b) decoding builds only what the registry allows ------------------------------------


def hostile(kind: str, name: str, values: list[Any], *, enum_: bool = False) -> bytes:
    """A payload asking for the type ``name`` built from ``values``."""
    if kind == "msgpack":
        return msgpack.packb(msgpack.ExtType(2 if enum_ else 1, msgpack.packb([name, *values])))
    if enum_:
        return json.dumps({"__t": "e", "n": name, "v": values[0]}).encode()
    return json.dumps({"__t": "dc", "n": name, "f": values}).encode()


def serializer(kind: str, reg: TypeRegistry) -> Serializer:
    return MsgpackSerializer(reg) if kind == "msgpack" else JsonSerializer(reg)


KINDS = ["msgpack", "json"]


def _callables(marker: Path) -> list[tuple[str, list[Any]]]:
    """Names of things that would create ``marker`` if a decoder called them with these values."""
    return [
        ("os.system", [f"touch {marker}"]),
        ("builtins.eval", [f"open({str(marker)!r}, 'w')"]),
        ("builtins.exec", [f"open({str(marker)!r}, 'w')"]),
        ("subprocess.Popen", [["touch", str(marker)]]),
        ("subprocess.run", [["touch", str(marker)]]),
        ("pathlib.Path.touch", [str(marker)]),
    ]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("allowed", [False, True], ids=["plain-registry", "modules-allowed"])
@pytest.mark.parametrize("enum_", [False, True], ids=["as-dataclass", "as-enum"])
def test_a_payload_naming_a_callable_is_refused_and_nothing_runs(
    tmp_path: Path, kind: str, allowed: bool, enum_: bool
) -> None:
    marker = tmp_path / "pwned"
    reg = TypeRegistry()
    if allowed:  # the worst configuration: even these modules are allowed
        for module in ("os", "builtins", "subprocess", "pathlib"):
            reg.allow_module(module)
    s = serializer(kind, reg)
    for name, values in _callables(marker):
        with pytest.raises(SerializationError, match="unknown type name"):
            s.deserialize(hostile(kind, name, values, enum_=enum_))
    assert not marker.exists()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("module", ["this", "antigravity", "casty_no_such_module_5d1"])
def test_a_payload_naming_an_unimported_module_imports_nothing(kind: str, module: str) -> None:
    if module in sys.modules:
        pytest.skip(f"{module} was imported by something else")
    allowing = TypeRegistry()
    allowing.allow_module(module)  # allowed or not, a module is looked up, never imported
    for reg in (TypeRegistry(), allowing):
        s = serializer(kind, reg)
        for name in (f"{module}.Thing", f"{module}.sub.Thing", module):
            with pytest.raises(SerializationError, match="unknown type name"):
                s.deserialize(hostile(kind, name, [1]))
            with pytest.raises(SerializationError, match="unknown type name"):
                s.deserialize(hostile(kind, name, [1], enum_=True))
    assert module not in sys.modules


@pytest.mark.parametrize("kind", KINDS)
def test_a_dataclass_from_a_module_not_allowed_is_refused(kind: str) -> None:
    reg = TypeRegistry()
    reg.allow_module(__name__)  # this module is allowed; Ping's (tests.remote_helpers) is not
    s = serializer(kind, reg)
    for name in ("tests.remote_helpers.Ping", f"{__name__}.Ping", f"{__name__}.msgpack.ExtType"):
        with pytest.raises(SerializationError, match="unknown type name"):
            s.deserialize(hostile(kind, name, [1, "x"]))
    # the control: once registered, the same payload decodes
    reg.register(Ping)
    assert s.deserialize(hostile(kind, "tests.remote_helpers.Ping", [1, "x"])) == Ping(1, "x")


async def test_over_the_wire_a_hostile_payload_or_type_hint_runs_and_imports_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    module = "antigravity"
    if module in sys.modules:
        pytest.skip(f"{module} was imported by something else")
    async with node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        target = b.address.with_path("/user/sink").to_uri()
        sender = "casty://x@127.0.0.9:1/"
        good = MsgpackSerializer(registry()).serialize(Ping(2))
        envelopes = [
            MessageEnvelope(target, sender, hostile("msgpack", "os.system", [f"touch {marker}"]), "os.system"),
            MessageEnvelope(target, sender, hostile("msgpack", f"{module}.X", [1]), f"{module}.X"),
            MessageEnvelope(target, sender, good, f"{module}.Ping"),  # the hint is never used to load a type
        ]
        _reader, writer = await asyncio.open_connection("127.0.0.1", b.address.port)
        writer.write(frame(FRAME_HANDSHAKE, json.dumps({"host": "127.0.0.9", "port": 1}).encode())
                     + b"".join(frame(FRAME_MESSAGE, env.to_bytes()) for env in envelopes))
        assert await got.wait(1) == [Ping(2)]
        assert b.stats().inbound_dropped == 2
        writer.close()
    assert not marker.exists()
    assert module not in sys.modules


# -- (c) no pickle -------------------------------------------------------------------------

_UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}
_UNSAFE_IMPORT = re.compile(
    r"^\s*(?:import|from|cimport)\s+(" + "|".join(sorted(_UNSAFE_MODULES)) + r")\b", re.MULTILINE
)


def _casty_modules() -> list[Any]:
    modules = [casty]
    for info in pkgutil.walk_packages(casty.__path__, "casty."):
        try:
            modules.append(importlib.import_module(info.name))
        except ImportError:  # an extension that is not built
            continue
    return modules


def test_no_pickle_serializer_is_offered() -> None:
    for module in _casty_modules():
        for name, value in vars(module).items():
            assert "pickle" not in name.lower(), f"{module.__name__}.{name}"
            value_module = getattr(value, "__name__", None) if isinstance(value, type(sys)) else None
            assert value_module not in _UNSAFE_MODULES, f"{module.__name__}.{name} is {value_module}"
    exported = [name for name in casty.__all__ if name.endswith("Serializer")]
    assert sorted(exported) == ["JsonSerializer", "MsgpackSerializer", "Serializer"]
    assert isinstance(casty.RemoteActorSystem("s").serializer, MsgpackSerializer)


def test_no_casty_source_imports_pickle_or_marshal() -> None:
    root = Path(casty.__file__).parent
    sources = sorted(root.rglob("*.py")) + sorted(root.rglob("*.pyx"))
    assert len(sources) > 10
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert not _UNSAFE_IMPORT.search(text), path
        if path.suffix == ".py":
            for node_ in ast.walk(ast.parse(text)):
                if isinstance(node_, ast.Import):
                    names = {alias.name.split(".")[0] for alias in node_.names}
                elif isinstance(node_, ast.ImportFrom) and node_.module:
                    names = {node_.module.split(".")[0]}
                elif isinstance(node_, ast.Call) and getattr(node_.func, "id", "") == "__import__":
                    names = {"__import__"}
                else:
                    continue
                assert not names & (_UNSAFE_MODULES | {"__import__"}), f"{path}: {names}"
