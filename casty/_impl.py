"""Choose, once at import, between the Cython extensions and their pure twins.

``CASTY_NO_EXTENSIONS`` set to ``1``/``true``/``yes`` forces the pure twins;
unset, empty, ``0``/``false``/``no`` keep the extensions when they import.
Any other value is an error, so a typo cannot silently change the implementation.

When the extensions do not import on CPython (where a wheel or a build should have
made them), casty runs on the pure twins and says so: a :class:`RuntimeWarning`
naming the import error.  ``CASTY_REQUIRE_EXTENSIONS=1`` turns that into an
ImportError instead; ``CASTY_NO_EXTENSIONS=1`` chooses the pure twins, silently.

This is the only module that imports both kinds of twin, and :data:`TWINS` the only
table of them (see docs/architecture.md, "Twins").
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING, Final

__all__ = [
    "EXTENSIONS_ACTIVE",
    "TWINS",
    "EnvelopeWriter",
    "FrameProtocol",
    "InboundMessageHandler",
    "LocalTransport",
    "Mailbox",
    "MessageEnvelope",
    "ReadState",
    "Reassembler",
    "decode_plain",
    "dict_from_pairs",
    "encode_header",
    "encode_plain",
    "extensions_disabled",
    "extensions_required",
    "keys_safe_within",
    "missing_extensions_message",
    "safe_members",
]

log = logging.getLogger("casty")

_DISABLE = frozenset({"1", "true", "yes"})
_KEEP = frozenset({"", "0", "false", "no"})


def extensions_disabled(value: str | None) -> bool:
    """Parse a ``CASTY_NO_EXTENSIONS`` value.

    >>> extensions_disabled("1"), extensions_disabled("0"), extensions_disabled(None)
    (True, False, False)
    """
    raw = (value or "").strip().lower()
    if raw in _DISABLE:
        return True
    if raw in _KEEP:
        return False
    raise ValueError(
        f"CASTY_NO_EXTENSIONS must be 1/true/yes (pure twins) or 0/false/no/empty "
        f"(extensions), got {value!r}"
    )


def extensions_required(value: str | None) -> bool:
    """Parse a ``CASTY_REQUIRE_EXTENSIONS`` value: 1/true/yes require them.

    >>> extensions_required("yes"), extensions_required(""), extensions_required(None)
    (True, False, False)
    """
    return (value or "").strip().lower() in _DISABLE


def missing_extensions_message(exc: ImportError) -> str:
    """What a user is told when the extensions did not import (and was not asked to)."""
    return (
        f"casty's compiled extensions did not load ({exc}); running on the pure-Python "
        f"twins, several times slower. Reinstall casty from a wheel or with a C compiler "
        f"and Cython available; set CASTY_REQUIRE_EXTENSIONS=1 to make this an error, or "
        f"CASTY_NO_EXTENSIONS=1 to choose the pure twins and silence this warning"
    )


NO_EXTENSIONS = extensions_disabled(os.environ.get("CASTY_NO_EXTENSIONS"))
IMPORT_ERROR: ImportError | None = None

#: Every twin: name -> (pure module, Cython module), both exporting ``name``.  The one
#: table of them: the imports below follow it, and so do the tests' twin fixture
#: (tests/conftest.py) and the parity test (tests/test_parity.py).
TWINS: Final[dict[str, tuple[str, str]]] = {
    "MessageEnvelope": ("casty.transport.envelope", "casty._fast.envelope"),
    "encode_header": ("casty.transport.envelope", "casty._fast.envelope"),
    "LocalTransport": ("casty.transport.local", "casty._fast.local"),
    "Mailbox": ("casty.transport.mailbox", "casty._fast.mailbox"),
    "ReadState": ("casty.transport.mailbox", "casty._fast.mailbox"),
    "FrameProtocol": ("casty.transport.framing", "casty._fast.framing"),
    "encode_plain": ("casty.plain_codec", "casty._fast.plain_codec"),
    "decode_plain": ("casty.plain_codec", "casty._fast.plain_codec"),
    "dict_from_pairs": ("casty.plain_codec", "casty._fast.plain_codec"),
    "keys_safe_within": ("casty.plain_codec", "casty._fast.plain_codec"),
    "safe_members": ("casty.plain_codec", "casty._fast.plain_codec"),
    "InboundMessageHandler": ("casty.transport.inbound", "casty._fast.inbound"),
    "EnvelopeWriter": ("casty.transport.outbound", "casty._fast.outbound"),
    "Reassembler": ("casty.transport.reassembly", "casty._fast.reassembly"),
}

# Type checkers see the pure twins (the Cython ones have the same interface: see
# tests/test_parity.py); at run time they are used when asked for or when the
# extensions do not import.
if TYPE_CHECKING or NO_EXTENSIONS:
    from casty.plain_codec import decode_plain, dict_from_pairs, encode_plain, keys_safe_within, safe_members
    from casty.transport.envelope import MessageEnvelope, encode_header
    from casty.transport.framing import FrameProtocol
    from casty.transport.inbound import InboundMessageHandler
    from casty.transport.local import LocalTransport
    from casty.transport.mailbox import Mailbox, ReadState
    from casty.transport.outbound import EnvelopeWriter
    from casty.transport.reassembly import Reassembler

    EXTENSIONS_ACTIVE = False
else:
    try:
        from casty._fast.envelope import MessageEnvelope, encode_header
        from casty._fast.framing import FrameProtocol
        from casty._fast.inbound import InboundMessageHandler
        from casty._fast.local import LocalTransport
        from casty._fast.mailbox import Mailbox, ReadState
        from casty._fast.outbound import EnvelopeWriter
        from casty._fast.plain_codec import (
            decode_plain,
            dict_from_pairs,
            encode_plain,
            keys_safe_within,
            safe_members,
        )
        from casty._fast.reassembly import Reassembler
    except ImportError as exc:
        IMPORT_ERROR = exc
        if extensions_required(os.environ.get("CASTY_REQUIRE_EXTENSIONS")):
            raise ImportError(
                f"casty's compiled extensions were required (CASTY_REQUIRE_EXTENSIONS is set) "
                f"but did not load: {exc}"
            ) from exc
        log.debug("casty extensions unavailable, using the pure twins: %s", exc)
        # Elsewhere (PyPy, ...) no wheel carries them: the pure twins are the expected choice.
        if sys.implementation.name == "cpython":
            warnings.warn(missing_extensions_message(exc), RuntimeWarning, stacklevel=1)
        EXTENSIONS_ACTIVE = False
        # The pure twin of every name, by the table (the branch above imports them all).
        for _name, (_pure, _fast) in TWINS.items():
            globals()[_name] = getattr(importlib.import_module(_pure), _name)
        del _name, _pure, _fast
    else:
        EXTENSIONS_ACTIVE = True
