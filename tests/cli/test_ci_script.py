"""The CI script runs the README's quickstart commands verbatim, in a virtual environment inside the clone."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    quick = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quick, flags=re.S)
    return [line for b in blocks for line in b.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_quickstart_is_two_venv_commands() -> None:
    commands = _readme_commands()
    assert len(commands) == 2
    for cmd in commands:
        # a fresh venv, activated, before anything is installed: Debian's Python refuses system installs
        assert cmd.startswith("python3 -m venv .venv && . .venv/bin/activate && "), cmd
    assert commands[0].endswith("gridctl backtest")
    assert "'.[test]'" in commands[1] and commands[1].endswith("python -m pytest")


def test_ci_runs_exactly_the_readme_commands() -> None:
    script = [
        line
        for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.startswith("python3 -m venv")
    ]
    assert script == _readme_commands()
