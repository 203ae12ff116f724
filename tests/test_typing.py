"""Typing of refs and ask (issue 19, item 6): mypy --strict on tests/typecheck/kv_typed.py.

The file marks every line mypy must reject with ``# E: <codes>``; mypy must report
exactly those (line, code) pairs there, so good code passes and bad code is caught.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parent.parent
CASE = Path("tests") / "typecheck" / "kv_typed.py"
_MARK = re.compile(r"#\s*E:\s*([a-z-]+(?:,\s*[a-z-]+)*)\s*$")
_ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: (?P<text>.*)  \[(?P<code>[a-z-]+)\]$")


def expected_errors(source: str) -> set[tuple[int, str]]:
    found = set()
    for number, line in enumerate(source.splitlines(), 1):
        mark = _MARK.search(line)
        if mark:
            found.update((number, code.strip()) for code in mark.group(1).split(","))
    return found


@pytest.mark.slow
def test_mypy_accepts_typed_use_and_rejects_mismatched_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the project's config, and casty from this tree
    stdout, stderr, _ = mypy_api.run(
        ["--config-file", "pyproject.toml", "--show-error-codes", "--no-error-summary", str(CASE)]
    )
    assert not stderr, stderr
    errors = [m for m in map(_ERROR.match, stdout.splitlines()) if m]
    here = [m for m in errors if Path(m["file"]) == CASE]
    assert len(here) == len(errors), f"mypy reported errors outside {CASE}:\n{stdout}"
    got = {(int(m["line"]), m["code"]) for m in here}
    assert got == expected_errors((ROOT / CASE).read_text()), stdout
    texts = "\n".join(m["text"] for m in here)
    # The case: a Job asked of the key-value actor names both types.
    assert 'Incompatible return value type (got "Job", expected "Get | Put")' in texts
    assert 'Argument 1 to "tell" of "ActorRef" has incompatible type "Get"; expected "Job"' in texts


def test_ref_refuses_a_second_argument_that_is_no_type() -> None:
    from casty import RemoteActorSystem

    system = RemoteActorSystem("typed", "127.0.0.1", 0)
    with pytest.raises(TypeError, match=r"ref\(\) takes the message type the actor handles as its second "
                       r"argument \(a class, e.g. system.ref\(uri, Job\)\), got 5.0"):
        system.ref("casty://w@127.0.0.1:25520/user/jobs", 5.0)  # type: ignore[call-overload]
