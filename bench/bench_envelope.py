"""MessageEnvelope to_bytes / from_bytes: the Cython twin against the pure twin.

Two envelopes shaped like the wire vectors: ``simple`` (short URIs, 7-byte
payload) and ``remote`` (host:port URIs, 64-byte payload).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat
from types import ModuleType

from bench._harness import Table, rate
from casty._fast import envelope as fast
from casty.transport import envelope as pure

CASES = {
    "simple": ("casty://sys/user/a", "casty://sys/", b'{"x":1}', "mymod.Msg"),
    "remote": (
        "casty://sys@127.0.0.1:25520/user/worker-17",
        "casty://sys@127.0.0.1:25521/",
        bytes.fromhex("000102ff") * 16,
        "bench.Ping",
    ),
}


def _ops(
    module: ModuleType, fields: tuple[str, str, bytes, str]
) -> dict[str, Callable[[int], None]]:
    env = module.MessageEnvelope(*fields)
    data = env.to_bytes()
    to_bytes = env.to_bytes
    from_bytes = module.MessageEnvelope.from_bytes

    def encode(n: int) -> None:
        for _ in repeat(None, n):
            to_bytes()

    def decode(n: int) -> None:
        for _ in repeat(None, n):
            from_bytes(data)

    def round_trip(n: int) -> None:
        for _ in repeat(None, n):
            from_bytes(to_bytes())

    return {"to_bytes": encode, "from_bytes": decode, "round trip": round_trip}


def collect(quick: bool) -> list[Table]:
    # The pure twin is ~10x slower: give it fewer iterations for a similar wall time.
    n_fast, n_pure = (20_000, 4_000) if quick else (300_000, 40_000)
    table = Table("MessageEnvelope")
    for name, fields in CASES.items():
        fast_ops, pure_ops = _ops(fast, fields), _ops(pure, fields)
        for op, fn in fast_ops.items():
            table.add(f"{op} ({name})", rate(fn, n_fast), rate(pure_ops[op], n_pure))
    table.notes.append("round trip = from_bytes(to_bytes()) of the same envelope")
    return [table]


if __name__ == "__main__":
    for t in collect(quick=False):
        print(t.render())
