"""The red-team harness itself, run small: it must start its nodes, attack and report.

``make redteam`` runs every attack at full size; this checks only that the harness works
(two attacks, scaled down), not what the attacks achieve, so it passes before and after
the issue 20 fixes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


async def test_a_quick_red_team_run_reports_every_attack(tmp_path: Path) -> None:
    out = tmp_path / "redteam.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.redteam.redteam", "--quick", "--json", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
    )
    try:
        text, _ = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    shown = text.decode(errors="replace")[-3000:]
    assert proc.returncode == 0, shown
    result = json.loads(out.read_text())
    assert [a["key"] for a in result["attacks"]] == ["spray", "undecodable"], shown
    for attack in result["attacks"]:
        metrics = {row["metric"] for row in attack["rows"]}
        assert "attack stopped with" not in metrics, attack["rows"]
        assert {"spoofed replies (asks answered by the attacker)", "max loop stall of B (ms)"} <= metrics
        # the healthy peers asked each other throughout: the harness measured something
        assert attack["raw"]["victim_asks"]["started"] > 0 and attack["raw"]["healthy_asks"]["started"] > 0
        assert attack["raw"]["reported_after_settle"]
    assert "| attack | metric | value | bar | met |" in shown
