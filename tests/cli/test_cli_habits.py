"""CLI habits: one name for the data directory, freqtrade spellings answered, --json and readable tables."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gridctl.cli import FREQTRADE_COMMANDS, FREQTRADE_OPTIONS, _rewrite_aliases, app

runner = CliRunner()


def _commands(command: object, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    found = [(prefix, command)]
    for name in list(getattr(command, "commands", {})):
        sub = command.get_command(typer.Context(command), name)  # type: ignore[attr-defined]
        found += _commands(sub, (*prefix, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def test_every_data_directory_option_is_called_data_dir() -> None:
    with_dir = []
    for path, command in COMMANDS:
        for param in getattr(command, "params", []):
            opts = getattr(param, "opts", [])
            assert "--data" not in opts and "--datadir" not in opts, (path, opts)
            if "--data-dir" in opts:
                with_dir.append(" ".join(path))
    assert {"backtest", "optimize", "data sample", "data import", "data info", "data download"} <= set(
        with_dir
    )


@pytest.mark.parametrize("spelling", ["--data", "--datadir", "--data-dir"])
@pytest.mark.parametrize("command", [["backtest"], ["data", "info"]])
def test_old_and_freqtrade_spellings_reach_the_data_dir_option(
    tmp_path: Path, spelling: str, command: list[str]
) -> None:
    missing = tmp_path / "nowhere"
    for args in ([spelling, str(missing)], [f"{spelling}={missing}"]):
        result = runner.invoke(app, [*command, *args])
        assert result.exit_code == 2, result.output
        assert f"--data-dir: folder {missing} does not exist" in result.stderr, result.stderr


def test_every_strategy_file_option_is_called_strategy() -> None:
    """`backtest --config` and `config show -s/--strategy` named one thing two ways: now --strategy/-s
    everywhere (and --venue/-v beside it); --config is a hidden alias, in no --help."""
    with_strategy = []
    for path, command in COMMANDS:
        for param in getattr(command, "params", []):
            opts = getattr(param, "opts", [])
            assert "--config" not in opts, (path, opts)
            if "--strategy" in opts:
                assert param.opts + param.secondary_opts == ["--strategy", "-s"], (path, opts)
                with_strategy.append(" ".join(path))
            if "--venue" in opts:
                assert param.opts == ["--venue", "-v"], (path, opts)
        if path:
            assert "--config" not in runner.invoke(app, [*path, "--help"], terminal_width=200).output, path
    assert {"backtest", "live", "config show", "config validate"} <= set(with_strategy)


@pytest.mark.parametrize("spelling", ["--config", "--strategy", "-s"])
def test_every_spelling_reaches_the_strategy_option(spelling: str) -> None:
    shown = runner.invoke(app, ["config", "show", spelling, "hedge_grid_v1", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["strategy"]["source"].endswith("strategies/hedge_grid_v1.yaml")
    refusal = "error: no strategy config named 'no_such_x'; shipped strategy configs: default, hedge_grid_v1"
    calls = [["backtest", spelling, "no_such_x"], ["live", "--paper", spelling, "no_such_x"]]
    if spelling.startswith("--"):  # --name=VALUE (a short option takes its value as the next word)
        calls.append(["backtest", f"{spelling}=no_such_x"])
    for args in calls:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and result.stderr.startswith(refusal), (args, result.output)


def test_values_after_a_double_dash_are_not_rewritten() -> None:
    assert _rewrite_aliases(["backtest", "--data", "x", "--", "--data"]) == [
        "backtest",
        "--data-dir",
        "x",
        "--",
        "--data",
    ]
    assert _rewrite_aliases(["backtest", "--data-dirt"]) == ["backtest", "--data-dirt"]


@pytest.mark.parametrize("name", sorted(FREQTRADE_COMMANDS))
def test_freqtrade_command_names_point_to_the_gridctl_command(name: str) -> None:
    result = runner.invoke(app, [name, "--help"])
    equivalent = FREQTRADE_COMMANDS[name]
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (
        result.stderr.strip()
        == f"error: no command {name!r} (a freqtrade command); gridctl's is `gridctl {equivalent}`"
    )
    assert runner.invoke(app, [*equivalent.split(), "--help"]).exit_code == 0  # the pointer leads somewhere


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (["--timerange", "20240101-20240201"], "--start 2024-01-01 --end 2024-02-01"),
        (["--timerange=20230515-20231231"], "--start 2023-05-15 --end 2023-12-31"),
        (["--timerange", "20240101-"], "--start 2024-01-01 (end"),
        (["--timerange", "-20240201"], "--end 2024-02-01 (end"),
        (["--timerange", "last-week"], "--start YYYY-MM-DD --end YYYY-MM-DD"),
    ],
)
def test_timerange_is_answered_with_start_and_end(args: list[str], suggestion: str) -> None:
    for command in (["backtest"], ["optimize", "--profile", "no-such-profile"], ["data", "download"]):
        result = runner.invoke(app, [*command, *args])
        assert result.exit_code == 2
        assert result.stderr.startswith(
            "error: gridctl has no --timerange (a freqtrade option); give the range as "
        )
        assert suggestion in result.stderr, result.stderr


def _one_line(result: object) -> str:
    """The single stderr line of a refused command line (exit 2, nothing on stdout, no box, no usage)."""
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    lines = result.stderr.splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and result.stdout == "", result.output  # type: ignore[attr-defined]
    assert not any(c in lines[0] for c in "╭╰│") and "Usage:" not in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("path", "command"),
    [(p, c) for p, c in COMMANDS],
    ids=lambda v: " ".join(v) or "top" if isinstance(v, tuple) else "",
)
def test_every_usage_error_is_one_line_naming_the_command(path: tuple[str, ...], command: object) -> None:
    """Unknown option, unknown sub-command, an option missing its value and a stray argument: one line
    naming the problem and the command's --help, exit 2, on every command and group."""
    where = " ".join(("gridctl", *path))
    assert _one_line(runner.invoke(app, [*path, "--no-such-flag"])) == (
        f"error: no such option --no-such-flag; see {where} --help"
    )
    if getattr(command, "commands", None):
        line = _one_line(runner.invoke(app, [*path, "no-such-command"]))
        assert line == f"error: No such command 'no-such-command'; see {where} --help"
        return
    valued = [p for p in command.params if getattr(p, "opts", None) and not getattr(p, "is_flag", True)]
    for param in valued:
        opt = param.opts[0]
        line = _one_line(runner.invoke(app, [*path, opt]))
        assert line == f"error: Option '{opt}' requires an argument; see {where} --help", line
    if any(isinstance(p, typer.core.TyperArgument) and p.nargs == -1 for p in command.params):
        return  # `data import FILES...` takes any number of words
    # Stray words: a missing option or extra arguments.
    line = _one_line(runner.invoke(app, [*path, "first", "second", "third"]))
    assert line.startswith("error: ") and line.endswith(f"; see {where} --help"), line


@pytest.mark.parametrize("path", [(), ("study",), ("data",)])
def test_a_group_given_alone_prints_its_help_and_no_error(path: tuple[str, ...]) -> None:
    """`gridctl` or `gridctl study` alone shows the help (click's no-args-is-help), never an empty
    usage error after it."""
    r = subprocess.run(
        [sys.executable, "-m", "gridctl.cli", *path], capture_output=True, text=True, timeout=120
    )
    assert "Usage:" in r.stdout + r.stderr
    assert "error:" not in r.stdout + r.stderr, r.stderr


def test_a_thousand_stray_words_are_not_repeated_back() -> None:
    words = [f"S{i}/USDT:USDT" for i in range(1000)]
    line = _one_line(runner.invoke(app, ["backtest", "--symbols", *words]))
    assert line.startswith("error: Got unexpected extra argument(s) (S1/USDT:USDT S2/USDT:USDT ")
    assert line.endswith(" ...); see gridctl backtest --help") and len(line) < 260, line


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["backtest", "--jsn"],
            "error: no such option --jsn (did you mean --json?); see gridctl backtest --help",
        ),
        (
            ["backtest", "--strat", "x"],
            "error: no such option --strat (did you mean --start or --strategy?); "
            "see gridctl backtest --help",
        ),
        (
            ["study", "show", "x", "--tpo", "3"],
            "error: no such option --tpo (did you mean --top?); see gridctl study show --help",
        ),
        (["backtest", "--bogus"], "error: no such option --bogus; see gridctl backtest --help"),
    ],
)
def test_a_misspelt_option_is_answered_with_the_near_ones(args: list[str], line: str) -> None:
    assert _one_line(runner.invoke(app, args)) == line


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["backtest", "--timeframe-detail", "1m"], "--timeframe-detail"),
        (["backtest", "--strategy-list", "a"], "--strategy-list"),
        (["optimize", "--profile", "wide", "--epochs", "100"], "--epochs"),
        (["optimize", "--profile", "wide", "--spaces", "buy"], "--spaces"),
        (["optimize", "--profile", "wide", "--hyperopt-loss", "SharpeHyperOptLoss"], "--hyperopt-loss"),
        (["backtest", "--pairs", "BTC/USDT:USDT"], "--pairs"),
        (["data", "download", "--userdir", "x"], "--userdir"),
    ],
)
def test_freqtrade_options_point_to_the_gridctl_option(args: list[str], option: str) -> None:
    where = "gridctl " + " ".join(a for a in args[:2] if not a.startswith("-"))
    line = _one_line(runner.invoke(app, args))
    assert line == (
        f"error: no option {option} (a freqtrade option); gridctl's is {FREQTRADE_OPTIONS[option]}; "
        f"see {where} --help"
    )


LEAVES = [(" ".join(p), c) for p, c in COMMANDS if p and not getattr(c, "commands", None)]


def test_every_command_that_prints_a_result_has_json() -> None:
    """Every leaf command takes --json (config list, config validate, study export and report gained it)."""
    lacking = [
        name
        for name, command in LEAVES
        if not any("--json" in getattr(p, "opts", []) for p in command.params)
    ]
    assert lacking == [], lacking
    assert {"config list", "config validate", "study report", "study export"} <= {n for n, _ in LEAVES}


def test_config_list_and_validate_print_json() -> None:
    listed = json.loads(runner.invoke(app, ["config", "list", "--json"]).stdout)
    assert listed["strategies"]["names"] == ["default", "hedge_grid_v1"]
    assert listed["venues"]["names"] == ["binance_futures", "binance_futures_testnet"]
    checked = json.loads(
        runner.invoke(app, ["config", "validate", "default", "-v", "binance_futures", "--json"]).stdout
    )
    assert (
        checked["valid"] is True
        and checked["kind"] == "strategy"
        and checked["fits_venue"] == "binance_futures"
    )
    assert checked["symbol"] == "BTC/USDT:USDT" and checked["gates_disabled"] == []
    venue = json.loads(runner.invoke(app, ["config", "validate", "binance_futures", "--json"]).stdout)
    assert venue["kind"] == "venue" and venue["fees_source"] == "venue config"
    assert set(venue["credentials"]) == {"api.api_key", "api.api_secret"}


def test_square_brackets_in_command_help_survive_rich_markup() -> None:
    """``pip install 'gridctl[notebook]'`` in a docstring: rich reads ``[notebook]`` as a style tag and
    drops it unless escaped, so every bracketed word of a command's help must show in its --help."""
    import re

    checked = 0
    for path, command in COMMANDS:
        text = (getattr(command, "help", None) or "").replace("\\[", "[")
        words = re.findall(r"\[[A-Za-z_][\w-]*\]", text)
        if not words or not path:
            continue
        shown = runner.invoke(app, [*path, "--help"], terminal_width=200).output
        for word in words:
            assert word in shown, (path, word)
        checked += 1
    assert checked >= 1  # `study notebook` names the extra it needs


WIDE = 200  # --help printed 200 columns wide: a line of prose ends early only at a paragraph's end


def _help_prose(path: tuple[str, ...]) -> list[str]:
    """The lines of ``gridctl PATH --help`` above its first option panel, below the usage line."""
    out = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDE)}).output
    head = out.split("╭─", 1)[0].splitlines()
    usage = next(i for i, line in enumerate(head) if line.strip().startswith("Usage:"))
    return [line.rstrip() for line in head[usage + 1 :]]


def test_no_help_paragraph_breaks_a_line_inside_a_sentence() -> None:
    """Docstrings are wrapped at 100 columns in the source; --help printed at 200 columns must not keep
    those breaks: within a paragraph a line may end only where the next word would not have fit
    (rich pads the text one column each side: 198 columns of text). Developer notes of the
    function-size check ("Wide because:", "Long because:") are not help and are left out."""
    assert len(COMMANDS) >= 20  # the root, its groups and every sub-command
    for path, _command in COMMANDS:
        lines = _help_prose(path)
        assert not any(line.strip().startswith(("Wide because:", "Long because:")) for line in lines), path
        for line, following in itertools.pairwise(lines):
            if not line.strip() or not following.strip():
                continue
            if following.lstrip().startswith(("- ", "* ")) or following.startswith("   "):
                continue  # a list item or an indented example keeps its own line
            next_word = following.split()[0]
            assert len(line) + 1 + len(next_word) > WIDE - 1, (path, line, following)
        assert any(line.strip() for line in lines), path  # every command has prose to check


def test_help_paragraphs_keep_their_words_and_lists() -> None:
    from gridctl.cli import unwrap_help

    text = """First line
    goes on.

    Second paragraph
    wrapped here.

    - item one
    - item two

    Wide because: a note
    for the code's readers."""
    assert (
        unwrap_help(text) == "First line goes on.\n\nSecond paragraph wrapped here.\n\n- item one\n- item two"
    )
