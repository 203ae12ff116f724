"""The soak harness itself, run small: its ledger must see every send it checks.

``make soak`` runs it at full size; this keeps it honest between those runs (a send
path it no longer wraps makes every delivery look "never sent").
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


async def test_a_small_soak_accounts_for_every_tell() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.soak.soak", "--tells", "2000", "--kills", "3", "--ask-every", "100",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, cwd=ROOT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert "tells sent             12000" in text, text[-3000:]
    assert "watch soak: 3 nodes" in text, text[-3000:]
    assert text.rstrip().endswith("OK"), text[-3000:]
