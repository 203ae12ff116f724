"""Messages both sides of the interop tests use: this tree's casty and casty 0.21.0.

Imported by the test (as ``tests.interop.messages``) and by ``node021.py`` under the 0.21
interpreter (as ``messages``, from the script's directory), so it imports no casty at all.
The module name differs between the two, so neither side names these classes by
``module.QualName``: both register them under :data:`WIRE_NAMES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Text:
    """A tell: the sink records ``text``."""

    text: str


@dataclass(frozen=True)
class Echo:
    """An ask: the echo actor tells ``text`` (a plain str) to ``reply_to``."""

    text: str
    reply_to: Any


#: the ``_type`` each class travels as, on both sides
WIRE_NAMES: dict[type, str] = {Text: "casty_interop.Text", Echo: "casty_interop.Echo"}
