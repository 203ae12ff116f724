"""What inbound routing refuses and how a drop is logged, shared by both twins: a neutral module.

``casty.transport.inbound`` and ``casty._fast.inbound`` map a frame's target URI to a
local path with :func:`target_path`, explain a refusal with :func:`refusal` and log a
dropped frame with :func:`log_inbound_drop`, so both say the same things.  The
prefixes and cache bounds they use are in ``casty.wire``; the routing rules in
``docs/architecture.md``.  This module imports only neutral ones.
"""

from __future__ import annotations

import logging

from casty.address import _show, split_uri
from casty.wire import SYSTEM_PREFIX

__all__ = ["log_inbound_drop", "not_ours", "refusal", "refuse_connection", "target_path"]

# The inbound handler's logger, whichever twin logs through it.
log = logging.getLogger("casty.transport.inbound")


def target_path(target: str, system_name: str) -> str | None:
    """The local path ``target`` names, or None when it is no actor URI of ``system_name``.

    >>> target_path("casty://app@10.0.0.1:25520/user/a", "app"), target_path("casty://other/user/a", "app")
    ('/user/a', None)
    """
    try:
        system, _, _, path = split_uri(target)
    except ValueError:
        return None
    return path if system == system_name else None


def not_ours(target: str, system_name: str) -> str:
    """Why a frame for ``target`` is not for this system."""
    return f"target {_show(target)} is not an actor of system {system_name!r}"


def refusal(target: str, system_name: str) -> str:
    """Why a frame for ``target`` is not delivered (its path is refused or not ours)."""
    path = target_path(target, system_name)
    if path is not None and path.startswith(SYSTEM_PREFIX):
        return f"target {_show(target)} is a system actor, which peers may not message"
    return not_ours(target, system_name)


def log_inbound_drop(reason: str, count: int) -> None:
    """Log a dropped inbound message: a warning at counts 1, 2, 4, 8, ..., debug otherwise."""
    if count & (count - 1) == 0:
        log.warning("dropped an inbound message: %s (%d dropped so far)", reason, count)
    else:
        log.debug("dropped an inbound message: %s", reason)


def refuse_connection(origin: object, why: str) -> None:
    """A connection's peer broke the protocol (a bad compact-header frame): the node
    closes it with one line (``origin.misbehaving``); an origin without that (a
    handler wired by hand) gets the line only."""
    misbehaving = getattr(origin, "misbehaving", None)
    if misbehaving is not None:
        misbehaving(why)
    else:
        log.warning("refusing a frame: %s", why)
