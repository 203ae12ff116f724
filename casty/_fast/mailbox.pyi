"""Types of the Cython twin of ``casty.transport.mailbox``: the same interface."""

from casty.transport.mailbox import EAGER as EAGER
from casty.transport.mailbox import FAILED as FAILED
from casty.transport.mailbox import NOT_STARTED as NOT_STARTED
from casty.transport.mailbox import Mailbox as Mailbox
from casty.transport.mailbox import Suspended as Suspended
from casty.transport.mailbox import check_capacity as check_capacity
from casty.transport.mailbox import run_step as run_step

__all__ = ["EAGER", "FAILED", "NOT_STARTED", "Mailbox", "Suspended", "check_capacity", "run_step"]
