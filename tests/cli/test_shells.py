"""Shells are shells: `live`, `optimize` and `study ...` parse their flags into one options object whose
defaults and ranges are written once (live_bridge/options.py, research/options.py), and the library
checks the same object when a notebook builds it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gridctl.configs.errors import GridctlError
from gridctl.live_bridge.options import RANGES as LIVE_RANGES
from gridctl.live_bridge.options import LiveOptions
from gridctl.research.options import RANGES as RESEARCH_RANGES
from gridctl.research.options import BacktestOptions, OptimizeOptions, StudyOptions

REPO = Path(__file__).resolve().parents[2]
SHELLS = {
    "live_bridge/cli.py": ["live"],
    "research/cli.py": ["backtest"],
    "research/optimize_cli.py": [
        "optimize",
        "study_list",
        "study_show",
        "study_export",
        "study_report",
        "study_notebook",
    ],
}


def _defaults(path: str, function: str) -> list[tuple[str, ast.expr]]:
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function)
    args = fn.args.args[len(fn.args.args) - len(fn.args.defaults) :]
    return [(a.arg, d) for a, d in zip(args, fn.args.defaults, strict=True)]


@pytest.mark.parametrize(
    ("path", "function"), [(p, f) for p, fs in SHELLS.items() for f in fs], ids=lambda v: str(v)
)
def test_shell_signatures_write_no_default_of_their_own(path: str, function: str) -> None:
    """A default is None/False (nothing given) or read from the options module: never a number or a
    name typed into the shell (`fills_poll_s=5.0` was written three times)."""
    for name, default in _defaults(path, function):
        if isinstance(default, ast.Constant):
            assert default.value in (None, False), (function, name, default.value)
        else:
            assert isinstance(default, ast.Attribute | ast.Name), (function, name, ast.dump(default))


def test_the_live_command_falls_back_to_the_options_defaults() -> None:
    """What `gridctl live` passes when no flag is given is what LiveOptions() holds."""
    import typer

    from gridctl.cli import app

    command = typer.main.get_command(app).get_command(typer.Context(typer.main.get_command(app)), "live")
    shown = {p.name: p.default for p in command.params}  # type: ignore[union-attr]
    assert shown["poll_s"] == 1.0 and shown["fills_poll_s"] == 5.0 and shown["ops_port"] == 8787
    assert shown["strategy"] == "default" and shown["venue"] == "binance_futures"
    assert (shown["min_balance"], shown["max_skew_ms"], shown["max_bars"]) == (50.0, 1000, None)


def test_the_backtest_command_falls_back_to_the_options_defaults() -> None:
    """What `gridctl backtest` passes when no flag is given is what BacktestOptions() holds, and those are
    the documented defaults (the default strategy on the bundled sample market, 1m bars)."""
    import typer

    from gridctl.cli import app

    root = typer.main.get_command(app)
    command = root.get_command(typer.Context(root), "backtest")  # type: ignore[attr-defined]
    shown = {p.name: p.default for p in command.params}
    d = BacktestOptions()
    assert (shown["config"], shown["venue"], shown["exchange"], shown["timeframe"]) == (
        d.strategy,
        d.venue,
        d.exchange,
        d.timeframe,
    )
    assert (d.strategy, d.venue, d.exchange, d.timeframe) == ("default", "binance_futures", "sample", "1m")
    assert (shown["data"], shown["symbol"], shown["out"], shown["force"]) == (None, None, None, False)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("ops_port", 70000, "--ops-port must be within 0..65535, got 70000"),
        ("ops_port", -1, "--ops-port must be within 0..65535, got -1"),
        ("min_balance", float("nan"), "--min-balance must be within 0.0..1000000000.0, got nan"),
        ("min_balance", float("inf"), "--min-balance must be within 0.0..1000000000.0, got inf"),
        ("max_bars", 0, "--max-bars must be within 1..1000000000, got 0"),
        ("poll_s", 0.0, "--poll-s must be within 0.01..3600.0, got 0.0"),
        ("fills_poll_s", 1e308, "--fills-poll-s must be within 0.01..3600.0, got 1e+308"),
        ("max_skew_ms", 0, "--max-clock-skew-ms must be within 1..10000000000000, got 0"),
    ],
)
def test_live_options_built_in_python_are_checked_too(field: str, value: float, words: str) -> None:
    with pytest.raises(GridctlError) as err:
        LiveOptions(**{field: value})
    assert str(err.value) == words


def test_live_options_refuse_combinations_that_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(GridctlError, match=r"^--replay works with --paper only"):
        LiveOptions(mode="live", replay=tmp_path)
    with pytest.raises(GridctlError, match=r"^--out is for --replay runs"):
        LiveOptions(out=tmp_path / "out")
    with pytest.raises(GridctlError, match=r"^live mode must be 'paper' or 'live', got 'replay'"):
        LiveOptions(mode="replay")
    assert LiveOptions(replay=tmp_path, out=tmp_path / "out").max_bars is None  # a paper replay is fine


def test_a_replay_never_checks_the_journal(tmp_path: Path) -> None:
    (tmp_path / "folder.sqlite").mkdir()
    with pytest.raises(GridctlError, match="is a folder"):
        LiveOptions(journal=tmp_path / "folder.sqlite").check_journal()
    LiveOptions(journal=tmp_path / "folder.sqlite", replay=tmp_path).check_journal()  # a replay keeps none


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("trials", 0, "--trials must be within 1..1000000, got 0"),
        ("jobs", 0, "--jobs must be within 1..1024, got 0"),
        ("heartbeat_s", 0, "--heartbeat must be within 1..3600, got 0"),
        ("heartbeat_s", 3601, "--heartbeat must be within 1..3600, got 3601"),
    ],
)
def test_optimize_options_built_in_python_are_checked_too(field: str, value: int, words: str) -> None:
    with pytest.raises(GridctlError) as err:
        OptimizeOptions(profile="wide", **{field: value})
    assert str(err.value) == words
    assert OptimizeOptions(profile="wide").heartbeat_s == 10  # the documented default
    assert StudyOptions().studies_dir is None


def test_every_range_names_a_flag_and_is_ordered() -> None:
    for name, (flag, lo, hi) in {**LIVE_RANGES, **RESEARCH_RANGES}.items():
        assert flag.startswith("--") and lo < hi, name
