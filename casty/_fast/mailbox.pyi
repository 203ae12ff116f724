"""Types of the Cython twin of ``casty.transport.mailbox``: the same interface."""

from casty.transport.mailbox import Mailbox as Mailbox

__all__ = ["Mailbox"]
