"""`gridctl --help` stays cheap: the sub-command groups are imported only when a command line reaches them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from gridctl.cli import LAZY_GROUPS, app
from gridctl.data.sample import write_sample

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("numba", "polars", "pandas", "pyarrow", "optuna", "ccxt", "pydantic", "numpy")

_PROBE = """
import json, sys
HEAVY = sys.argv.pop(1).split(",")
from gridctl.cli import app
try:
    app(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "loaded": sorted(m for m in HEAVY if m in sys.modules)}), file=sys.stderr)
"""


def _probe(*args: str, heavy: tuple[str, ...] = HEAVY) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(heavy), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(proc.stderr.strip().splitlines()[-1]) | {"stdout": proc.stdout}


def test_top_level_help_lists_every_command_without_importing_heavy_modules() -> None:
    out = _probe("--help")
    assert out["code"] == 0 and out["loaded"] == []
    for name in ("backtest", "bench", *LAZY_GROUPS):
        assert name in out["stdout"]
    for _module, help_text in LAZY_GROUPS.values():
        assert help_text in out["stdout"]


def test_a_lazy_group_loads_when_a_command_line_reaches_it() -> None:
    out = _probe("data", "--help")
    assert out["code"] == 0 and "polars" in out["loaded"]  # data.cli was imported to list its commands
    assert "sample" in out["stdout"] and "--install-completion" not in out["stdout"]


def test_typos_still_suggest_lazy_groups_and_their_commands_run() -> None:
    typo = CliRunner().invoke(app, ["confg"])
    assert typo.exit_code == 2 and "Did you mean 'config'" in typo.output
    shown = CliRunner().invoke(app, ["config", "show"])
    assert shown.exit_code == 0 and "strategy config:" in shown.output


def test_a_backtest_loads_the_report_stack_only_to_write_a_report(tmp_path: Path) -> None:
    # plotly (the HTML report) loads with --out only; pandas, pyarrow, optuna and ccxt never.
    write_sample(tmp_path / "data", days=3)
    heavy = ("plotly", "pandas", "pyarrow", "optuna", "ccxt", "numba", "polars")
    plain = _probe("backtest", "--data", str(tmp_path / "data"), "--json", heavy=heavy)
    assert plain["code"] == 0 and json.loads(plain["stdout"])["bars"] == 3 * 1440
    assert plain["loaded"] == ["numba", "polars"]
    report = _probe(
        "backtest", "--data", str(tmp_path / "data"), "--json", "--out", str(tmp_path / "out"), heavy=heavy
    )
    assert report["code"] == 0 and (tmp_path / "out" / "report.html").is_file()
    assert report["loaded"] == ["numba", "plotly", "polars"]
