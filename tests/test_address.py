"""ActorAddress: URI parsing and formatting, both ways."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casty.address import ActorAddress


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("casty://sys/user/a", ActorAddress("sys", "/user/a")),
        ("casty://sys/", ActorAddress("sys", "/")),
        ("casty://my-system/user/a/b/c", ActorAddress("my-system", "/user/a/b/c")),
        ("casty://sys@127.0.0.1:25520/user/a", ActorAddress("sys", "/user/a", "127.0.0.1", 25520)),
        ("casty://sys@node-1.example.org:1/x", ActorAddress("sys", "/x", "node-1.example.org", 1)),
        ("casty://sys@h:0/", ActorAddress("sys", "/", "h", 0)),
        ("casty://sys@h:65535/temp/ask-3", ActorAddress("sys", "/temp/ask-3", "h", 65535)),
        ("casty://sys@[::1]:7/user/a", ActorAddress("sys", "/user/a", "::1", 7)),
        ("casty://sys@[fe80::1%eth0]:80/a", ActorAddress("sys", "/a", "fe80::1%eth0", 80)),
        ("casty://sys@[2001:db8::42]:9000/", ActorAddress("sys", "/", "2001:db8::42", 9000)),
    ],
)
def test_from_uri(uri: str, expected: ActorAddress) -> None:
    got = ActorAddress.from_uri(uri)
    assert got == expected
    assert got.is_local == (expected.host is None)


@pytest.mark.parametrize(
    ("address", "uri"),
    [
        (ActorAddress("sys", "/user/a"), "casty://sys/user/a"),
        (ActorAddress("sys", "/user/a", "10.0.0.2", 25520), "casty://sys@10.0.0.2:25520/user/a"),
        (ActorAddress("sys", "/user/a", "::1", 7), "casty://sys@[::1]:7/user/a"),
        (ActorAddress("sys", "/", "2001:db8::1", 80), "casty://sys@[2001:db8::1]:80/"),
    ],
)
def test_to_uri_and_back(address: ActorAddress, uri: str) -> None:
    assert address.to_uri() == uri
    assert str(address) == uri
    assert ActorAddress.from_uri(uri) == address


def test_local_and_remote() -> None:
    assert ActorAddress("sys", "/user/a").is_local
    remote = ActorAddress("sys", "/user/a", "h", 1)
    assert not remote.is_local
    assert remote.with_path("/user/b") == ActorAddress("sys", "/user/b", "h", 1)


BAD_URIS = [
    "",
    "sys/user/a",
    "http://sys/user/a",
    "CASTY://sys/user/a",
    "casty://",
    "casty:///user/a",
    "casty://sys:80/user/a",  # a port needs a host
    "casty://sys@:80/user/a",  # empty host
    "casty://sys@host/user/a",  # a host needs a port
    "casty://sys@host:/user/a",
    "casty://sys@host:99999/user/a",
    "casty://sys@host:123456/user/a",
    "casty://sys@host:-1/user/a",
    "casty://sys@host:8o/user/a",
    "casty://sys@host:\u0663/user/a",  # an Arabic-Indic digit is not a port
    "casty://sys@::1:80/user/a",  # IPv6 without brackets
    "casty://sys@[]:80/user/a",
    "casty://sys@[::1]/user/a",
    "casty://sys@[::1:80/user/a",
    "casty://sys@[localhost]:80/user/a",  # brackets are for IPv6 only
    "casty://sys@a@b:80/user/a",
    "casty://@host:80/user/a",
    "casty://a:b@host:80/user/a",
    "casty://my sys/user/a",
    "casty://sys@my host:80/user/a",
    "casty://sys\n",
    "casty://sys@host:80\n",
    "casty://sys[1]/user/a",
    "casty://sys",  # no path: a URI names an actor, "/" at least
    "casty://sys@h:0",
    "casty://sys@[::1]:7",
]


@pytest.mark.parametrize("uri", BAD_URIS)
def test_bad_uri_raises_naming_it(uri: str) -> None:
    with pytest.raises(ValueError) as info:
        ActorAddress.from_uri(uri)
    assert repr(uri) in str(info.value)


def test_a_uri_without_a_path_is_refused_even_when_its_head_was_seen() -> None:
    # The parsed head ("sys@h:1") is cached per node; the missing path must not slip past it.
    assert ActorAddress.from_uri("casty://sys@h:1/user/a").path == "/user/a"
    for uri in ("casty://sys@h:1", "casty://sys"):
        with pytest.raises(ValueError, match="no path") as info:
            ActorAddress.from_uri(uri)
        assert repr(uri) in str(info.value)


@pytest.mark.parametrize("value", [None, b"casty://sys/user/a", 42])
def test_non_str_uri(value: object) -> None:
    with pytest.raises(ValueError, match="must be a str"):
        ActorAddress.from_uri(value)  # type: ignore[arg-type]


def test_huge_bad_uri_is_named_but_cut_short() -> None:
    uri = "casty://sys@" + "x" * 100_000
    with pytest.raises(ValueError) as info:
        ActorAddress.from_uri(uri)
    assert uri[:50] in str(info.value)
    assert len(str(info.value)) < 500


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"system": "", "path": "/a"}, "system name"),
        ({"system": "s", "path": "a"}, "must start with '/'"),
        ({"system": "s", "path": "/a", "host": "h"}, "both host and port"),
        ({"system": "s", "path": "/a", "port": 1}, "both host and port"),
        ({"system": "s", "path": "/a", "host": "h", "port": 70000}, "0..65535"),
        ({"system": "s", "path": "/a", "host": "h", "port": True}, "0..65535"),
    ],
)
def test_bad_fields(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ActorAddress(**kwargs)  # type: ignore[arg-type]


def test_frozen_and_hashable() -> None:
    a = ActorAddress("sys", "/user/a", "h", 1)
    assert hash(a) == hash(ActorAddress.from_uri(a.to_uri()))
    with pytest.raises(AttributeError):
        a.path = "/user/b"  # type: ignore[misc]


_name = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=12)
_path = st.lists(_name, max_size=4).map(lambda parts: "/" + "/".join(parts))
_host = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True),
)


@settings(max_examples=200, deadline=None)
@given(system=_name, path=_path, host=st.none() | _host, port=st.integers(0, 65535))
def test_round_trip(system: str, path: str, host: str | None, port: int) -> None:
    address = ActorAddress(system, path, host, None if host is None else port)
    assert ActorAddress.from_uri(address.to_uri()) == address


def test_uris_of_one_node_share_a_parsed_head_but_not_paths() -> None:
    from casty import address as address_mod

    a = ActorAddress.from_uri("casty://s@h:1/user/a")
    b = ActorAddress.from_uri("casty://s@h:1/temp/ask-7\n")
    assert (a.system, a.host, a.port, a.path) == ("s", "h", 1, "/user/a")
    assert (b.system, b.host, b.port, b.path) == ("s", "h", 1, "/temp/ask-7\n")
    assert a == ActorAddress("s", "/user/a", "h", 1) and hash(b) == hash(ActorAddress("s", "/temp/ask-7\n", "h", 1))
    assert "s@h:1" in address_mod.URI_HEADS


def test_long_heads_from_peers_are_parsed_but_not_cached() -> None:
    from casty import address as address_mod

    address_mod.URI_HEADS.clear()
    long_host = "h" * 5000
    assert ActorAddress.from_uri(f"casty://s@{long_host}:1/a").host == long_host
    assert address_mod.URI_HEADS == {}
    with pytest.raises(ValueError, match="malformed"):
        ActorAddress.from_uri("casty://s@h:1:2/a")
    assert address_mod.URI_HEADS == {}


@settings(max_examples=200)
@given(system=_name, path=_path, host=st.none() | _host, port=st.integers(0, 65535))
def test_split_uri_gives_the_parts_from_uri_builds(system: str, path: str, host: str | None, port: int) -> None:
    from casty.address import split_uri

    uri = ActorAddress(system, path, host, None if host is None else port).to_uri()
    address = ActorAddress.from_uri(uri)
    assert split_uri(uri) == (address.system, address.host, address.port, address.path)


@pytest.mark.parametrize("uri", ["casty://", "http://s/a", "casty://s@h/a", "casty://s@h:99999/a"])
def test_split_uri_raises_as_from_uri_does(uri: str) -> None:
    from casty.address import split_uri

    with pytest.raises(ValueError) as split_error:
        split_uri(uri)
    with pytest.raises(ValueError) as parse_error:
        ActorAddress.from_uri(uri)
    assert str(split_error.value) == str(parse_error.value)


def test_with_path_checks_the_path_and_keeps_the_node() -> None:
    base = ActorAddress("s", "/", "h", 1, "node-a")
    assert base.with_path("/user/x") == ActorAddress("s", "/user/x", "h", 1, "node-a")
    for bad in ("user/x", "", None, b"/x"):
        with pytest.raises(ValueError, match="actor path must start with '/'"):
            base.with_path(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("uri", "part"),
    [
        ("casty://sy s/user/a", "the system name is empty or holds one of / @ : [ ] or a space"),
        ("casty://@h:1/user/a", "the system name is empty"),
        ("casty://sys:1/user/a", "the system name is empty or holds one of"),
        ("casty://sys@host/user/a", "the node address has no ':port'"),
        ("casty://sys@host:80x/user/a", "the port is not a number of up to 5 digits"),
        ("casty://sys@:80/user/a", "the host is empty"),
        ("casty://sys@ho st:80/user/a", "the host is neither a name nor a bracketed IPv6 address"),
    ],
)
def test_a_malformed_uri_says_which_part_is_wrong_and_the_form_expected(uri: str, part: str) -> None:
    with pytest.raises(ValueError) as info:
        ActorAddress.from_uri(uri)
    text = str(info.value)
    assert text.startswith(f"malformed casty actor URI {uri!r}: {part}")
    assert text.endswith("expected 'casty://system@host:port/path' (or 'casty://system/path' for this process)")
