"""Choose, once at import, between the Cython extensions and their pure twins.

``CASTY_NO_EXTENSIONS`` set to ``1``/``true``/``yes`` forces the pure twins;
unset, empty, ``0``/``false``/``no`` keep the extensions when they import.
Any other value is an error, so a typo cannot silently change the implementation.
"""

from __future__ import annotations

import logging
import os

__all__ = [
    "EXTENSIONS_ACTIVE",
    "EnvelopeWriter",
    "FrameProtocol",
    "InboundMessageHandler",
    "LocalTransport",
    "Mailbox",
    "MessageEnvelope",
    "decode_plain",
    "dict_from_pairs",
    "encode_header",
    "encode_plain",
    "extensions_disabled",
    "keys_safe_within",
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


NO_EXTENSIONS = extensions_disabled(os.environ.get("CASTY_NO_EXTENSIONS"))
IMPORT_ERROR: ImportError | None = None

from casty.plain_codec import decode_plain as _py_decode_plain  # noqa: E402
from casty.plain_codec import dict_from_pairs as _py_dict_from_pairs  # noqa: E402
from casty.plain_codec import encode_plain as _py_encode_plain  # noqa: E402
from casty.plain_codec import keys_safe_within as _py_keys_safe_within  # noqa: E402
from casty.plain_codec import safe_members as _py_safe_members  # noqa: E402
from casty.transport.envelope import MessageEnvelope as _PyMessageEnvelope  # noqa: E402
from casty.transport.envelope import encode_header as _py_encode_header  # noqa: E402
from casty.transport.framing import FrameProtocol as _PyFrameProtocol  # noqa: E402
from casty.transport.local import LocalTransport as _PyLocalTransport  # noqa: E402
from casty.transport.mailbox import Mailbox as _PyMailbox  # noqa: E402

MessageEnvelope: type[_PyMessageEnvelope] = _PyMessageEnvelope
LocalTransport: type[_PyLocalTransport] = _PyLocalTransport
Mailbox: type[_PyMailbox] = _PyMailbox
FrameProtocol: type[_PyFrameProtocol] = _PyFrameProtocol
decode_plain = _py_decode_plain
encode_header = _py_encode_header
encode_plain = _py_encode_plain
dict_from_pairs = _py_dict_from_pairs
keys_safe_within = _py_keys_safe_within
safe_members = _py_safe_members
EXTENSIONS_ACTIVE = False

if not NO_EXTENSIONS:
    try:
        from casty._fast.envelope import MessageEnvelope as _CMessageEnvelope
        from casty._fast.envelope import encode_header as _c_encode_header
        from casty._fast.framing import FrameProtocol as _CFrameProtocol
        from casty._fast.local import LocalTransport as _CLocalTransport
        from casty._fast.mailbox import Mailbox as _CMailbox
        from casty._fast.plain_codec import decode_plain as _c_decode_plain
        from casty._fast.plain_codec import dict_from_pairs as _c_dict_from_pairs
        from casty._fast.plain_codec import encode_plain as _c_encode_plain
        from casty._fast.plain_codec import keys_safe_within as _c_keys_safe_within
        from casty._fast.plain_codec import safe_members as _c_safe_members
    except ImportError as exc:
        IMPORT_ERROR = exc
        log.debug("casty extensions unavailable, using the pure twins: %s", exc)
    else:
        MessageEnvelope = _CMessageEnvelope  # type: ignore[assignment]
        LocalTransport = _CLocalTransport  # type: ignore[assignment]
        Mailbox = _CMailbox
        FrameProtocol = _CFrameProtocol  # type: ignore[assignment]
        decode_plain = _c_decode_plain
        encode_header = _c_encode_header
        encode_plain = _c_encode_plain
        dict_from_pairs = _c_dict_from_pairs
        keys_safe_within = _c_keys_safe_within
        safe_members = _c_safe_members
        EXTENSIONS_ACTIVE = True

# The inbound handler and the envelope writer go through the serializers, which import
# the codecs chosen above from this module, so they are chosen last.
from casty.transport.inbound import InboundMessageHandler as _PyInboundMessageHandler  # noqa: E402
from casty.transport.outbound import EnvelopeWriter as _PyEnvelopeWriter  # noqa: E402

InboundMessageHandler: type[_PyInboundMessageHandler] = _PyInboundMessageHandler
EnvelopeWriter: type[_PyEnvelopeWriter] = _PyEnvelopeWriter
if EXTENSIONS_ACTIVE:
    from casty._fast.inbound import InboundMessageHandler as _CInboundMessageHandler
    from casty._fast.outbound import EnvelopeWriter as _CEnvelopeWriter

    InboundMessageHandler = _CInboundMessageHandler  # type: ignore[assignment]
    EnvelopeWriter = _CEnvelopeWriter  # type: ignore[assignment]
