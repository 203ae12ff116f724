"""Types of the Cython twin of ``casty.transport.mailbox``: the same interface."""

from casty.transport.mailbox import Mailbox as Mailbox
from casty.transport.mailbox import ReadState as ReadState

__all__ = ["Mailbox", "ReadState"]
