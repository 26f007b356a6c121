"""A table of hostile inputs through the real CLI: every one is refused the same way.

For each case: exit code 2, exactly one stderr line starting with ``error:`` (the last one; before it
only the backtest's own status lines), naming the file, field or row; no traceback; nothing written
(the whole case folder is unchanged, and targets under /proc or /sys do not appear). Most cases run
through ``typer.testing.CliRunner`` on ``cli.app``, a few through a real ``gridctl`` process.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from gridctl.cli import app
from gridctl.configs.loader import SHIPPED_DIRS
from gridctl.data.sample import write_sample
from gridctl.data.store import write_candles, write_funding

REPO = Path(__file__).resolve().parents[2]
SYMBOL_DIR = Path("store/sample/BTC_USDT_USDT")
TRADE = SYMBOL_DIR / "1m" / "2024-01.parquet"
MARK = SYMBOL_DIR / "mark_1m" / "2024-01.parquet"
FUNDING = SYMBOL_DIR / "funding" / "2024.parquet"
# Lines the backtest prints on stderr before it loads data (rich status); anything else is a failure.
STATUS_PREFIXES = ("ensuring the bundled sample market", "running ")
STRATEGY_TEXT = (SHIPPED_DIRS["strategy"] / "default.yaml").read_text()
# The shipped venue, its symbol rules snapshot named by absolute path (copies are written elsewhere).
VENUE_TEXT = (
    (SHIPPED_DIRS["venue"] / "binance_futures.yaml")
    .read_text()
    .replace("symbol_rules_file: symbols/", f"symbol_rules_file: {SHIPPED_DIRS['venue']}/symbols/")
)


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "store"
    write_sample(path, days=10)
    return path


# ----------------------------------------------------------------------------------------------------
# Building blocks for the cases: each takes the case folder and returns (argv, words the error names)
# ----------------------------------------------------------------------------------------------------


def _file(tmp: Path, name: str, payload: bytes) -> Path:
    path = tmp / name
    path.write_bytes(payload)
    return path


def _latin1_comment(text: str, line: int) -> bytes:
    lines = text.encode("utf-8").split(b"\n")
    lines[line - 1] += b"  # caf\xe9 (Latin-1)"
    return b"\n".join(lines)


NON_UTF8: dict[str, Callable[[str], tuple[bytes, list[str]]]] = {
    "random-bytes": lambda text: (bytes(range(128, 256)) * 4, ["offset 0", "line 1"]),
    "latin1-comment-line-3": lambda text: (_latin1_comment(text, 3), ["line 3"]),
    "utf16": lambda text: (text.encode("utf-16"), ["offset 0"]),
}


def _strategy_commands(path: str, store: str) -> dict[str, list[str]]:
    return {
        "validate": ["config", "validate", path, "--kind", "strategy"],
        "show": ["config", "show", "-s", path],
        "show-json": ["config", "show", "-s", path, "--json"],
        "backtest-config": ["backtest", "--data", store, "--config", path],
        "backtest-config-json": ["backtest", "--data", store, "--config", path, "--json"],
    }


def _venue_commands(path: str, store: str) -> dict[str, list[str]]:
    return {
        "validate": ["config", "validate", path, "--kind", "venue"],
        "show-json": ["config", "show", "-v", path, "--json"],
        "backtest-venue": ["backtest", "--data", store, "--venue", path],
        "backtest-venue-json": ["backtest", "--data", store, "--venue", path, "--json"],
    }


def _truncate(path: Path) -> None:
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])


def _set_value(path: Path, column: str, row: int, value: float) -> None:
    df = pl.read_parquet(path)
    values = df[column].to_numpy().copy()
    values[row] = value
    df.with_columns(pl.Series(column, values)).write_parquet(path)


def _drop_funding_marks(tmp: Path) -> None:
    """Funding without mark prices: the loader then reads the mark candles (and must check them)."""
    path = tmp / FUNDING
    pl.read_parquet(path).with_columns(pl.lit(None, dtype=pl.Float64).alias("mark_price")).write_parquet(path)


def _low_leverage_venue(tmp: Path) -> Path:
    """A venue whose BTC brackets allow at most 5x while trading.leverage is 10 (in its rules snapshot)."""
    snap = yaml.safe_load((SHIPPED_DIRS["venue"] / "symbols" / "binance_usdm.yaml").read_text())
    snap["brackets"]["BTC/USDT:USDT"] = [
        {
            "notional_floor": 0.0,
            "notional_cap": 1e9,
            "maint_margin_ratio": 0.01,
            "cum": 0.0,
            "max_leverage": 5,
        }
    ]
    _file(tmp, "low_leverage_rules.yaml", yaml.safe_dump(snap).encode())
    text = re.sub(r"symbol_rules_file: .*", "symbol_rules_file: low_leverage_rules.yaml", VENUE_TEXT)
    return _file(tmp, "low_leverage.yaml", text.encode())


def _tiny_market(tmp: Path, bars: int) -> None:
    """Exchange `tiny`: ``bars`` 1m bars with funding around them (valid data, just too short)."""
    start = 1_704_067_200_000
    ts = start + 60_000 * np.arange(bars, dtype=np.int64)
    price = np.full(bars, 60_000.0)
    candles = pl.DataFrame(
        {"ts": ts, "open": price, "high": price + 1, "low": price - 1, "close": price, "volume": price}
    )
    write_candles(tmp / "store", "tiny", "BTC/USDT:USDT", "1m", candles)
    fts = np.array([start - 8 * 3_600_000, start, start + 8 * 3_600_000], dtype=np.int64)
    write_funding(
        tmp / "store", "tiny", "BTC/USDT:USDT",
        pl.DataFrame({"ts": fts, "rate": [1e-4] * 3, "mark_price": [60_000.0] * 3}),
    )  # fmt: skip


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Case:
    """``build(case_dir)`` prepares files and returns the argv and the words the error must contain."""

    id: str
    build: Callable[[Path], tuple[list[str], list[str]]]
    forbidden: list[str] = field(default_factory=list)  # paths that must not exist afterwards


def _cases() -> list[Case]:
    cases: list[Case] = []
    # A config file that is not UTF-8, in every command that reads one.
    for variant, make in NON_UTF8.items():
        for command in _strategy_commands("F", "S"):

            def build(tmp: Path, make=make, command=command) -> tuple[list[str], list[str]]:
                payload, where = make(STRATEGY_TEXT)
                path = str(_file(tmp, "strategy.yaml", payload))
                return _strategy_commands(path, str(tmp / "store"))[command], [path, "not UTF-8", *where]

            cases.append(Case(f"non-utf8-strategy-{variant}-{command}", build))
        for command in _venue_commands("F", "S"):

            def build(tmp: Path, make=make, command=command) -> tuple[list[str], list[str]]:
                payload, where = make(VENUE_TEXT)
                path = str(_file(tmp, "venue.yaml", payload))
                return _venue_commands(path, str(tmp / "store"))[command], [path, "not UTF-8", *where]

            cases.append(Case(f"non-utf8-venue-{variant}-{command}", build))

    def backtest(tmp: Path, *args: str) -> list[str]:
        return ["backtest", "--data", str(tmp / "store"), *args]

    def venue_tick_1e6(tmp: Path):
        """BTC's tick set to 1e6 in a copy of the shipped rules snapshot (a tick wider than a grid step)."""
        snap = (SHIPPED_DIRS["venue"] / "symbols" / "binance_usdm.yaml").read_text()
        btc = '  "BTC/USDT:USDT":\n    tick_size: 0.1\n'
        assert btc in snap
        rules = _file(tmp, "rules.yaml", snap.replace(btc, btc.replace("0.1", "1e6")).encode())
        shipped = f"symbol_rules_file: {SHIPPED_DIRS['venue']}/symbols/binance_usdm.yaml"
        assert shipped in VENUE_TEXT
        venue = _file(tmp, "v.yaml", VENUE_TEXT.replace(shipped, f"symbol_rules_file: {rules}").encode())
        return backtest(tmp, "--venue", str(venue)), ["tick_size 1e+06", "wider than one grid step"]

    # Output and data paths that cannot be used, refused before the backtest runs.
    def out_under_file(tmp: Path):
        _file(tmp, "a_file", b"keep me")
        return backtest(tmp, "--out", str(tmp / "a_file" / "res")), ["--out", "a_file", "is a file"]

    def out_is_file(tmp: Path):
        _file(tmp, "a_file", b"keep me")
        return backtest(tmp, "--out", str(tmp / "a_file")), ["--out", "a_file", "not a folder"]

    def out_holds_results(tmp: Path):
        (tmp / "res").mkdir()
        _file(tmp / "res", "stats.json", b"{}")
        return backtest(tmp, "--out", str(tmp / "res")), ["--out", "already holds results", "--force"]

    def out_holds_other_files(tmp: Path):
        (tmp / "res").mkdir()
        _file(tmp / "res", "thesis.tex", b"mine")
        return backtest(tmp, "--out", str(tmp / "res"), "--force"), ["--out", "thesis.tex"]

    proc_out = f"/proc/gridctl-hostile-{os.getpid()}"
    sys_out = f"/sys/gridctl-hostile-{os.getpid()}"
    cases += [
        Case("out-under-a-file", out_under_file),
        Case("out-is-a-file", out_is_file),
        Case("out-holds-results-without-force", out_holds_results),
        Case("out-holds-other-files-even-with-force", out_holds_other_files),
        Case("out-under-proc", lambda t: (backtest(t, "--out", proc_out), ["--out", proc_out]), [proc_out]),
        Case(
            "out-under-sys", lambda t: (backtest(t, "--out", sys_out + "/r"), ["--out", sys_out]), [sys_out]
        ),
    ]

    def data_is_file(tmp: Path):
        path = _file(tmp, "a_file", b"x")
        return ["backtest", "--data", str(path)], ["--data", str(path), "not a folder"]

    def data_under_file(tmp: Path):
        _file(tmp, "a_file", b"x")
        return ["backtest", "--data", str(tmp / "a_file" / "d")], ["--data", "a_file", "is a file"]

    def data_missing(tmp: Path):
        return ["backtest", "--data", str(tmp / "nope")], ["--data", "nope", "does not exist"]

    def data_dir_cmd(sub: list[str], where: Callable[[Path], str], words: list[str]):
        def build(tmp: Path):
            _file(tmp, "a_file", b"x")
            _file(tmp, "klines.csv", b"1,2,3\n")
            target = where(tmp)
            argv = ["data", *[a.replace("{tmp}", str(tmp)) for a in sub], "--data-dir", target]
            return argv, ["--data-dir", *words]

        return build

    port = _closed_port()
    download = ["download", "--symbol", "BTC/USDT:USDT", "--start", "2024-01-01", "--end", "2024-01-02",
                "--api-url", f"http://127.0.0.1:{port}", "--timeout", "1"]  # fmt: skip
    resample = ["resample", "--symbol", "BTC/USDT:USDT", "--to", "1h"]
    cases += [
        Case("data-is-a-file", data_is_file),
        Case("data-under-a-file", data_under_file),
        Case("data-does-not-exist", data_missing),
        Case("sample-data-dir-file", data_dir_cmd(["sample"], lambda t: str(t / "a_file"), ["not a folder"])),
        Case(
            "sample-data-dir-under-file", data_dir_cmd(["sample"], lambda t: str(t / "a_file/x"), ["a_file"])
        ),
        Case("sample-data-dir-proc", data_dir_cmd(["sample"], lambda t: proc_out, [proc_out]), [proc_out]),
        Case(
            "download-data-dir-under-file", data_dir_cmd(download, lambda t: str(t / "a_file/x"), ["a_file"])
        ),
        Case("download-data-dir-sys", data_dir_cmd(download, lambda t: sys_out, [sys_out]), [sys_out]),
        Case(
            "import-data-dir-sys", data_dir_cmd(["import", "{tmp}/klines.csv"], lambda t: sys_out, [sys_out])
        ),
        Case("info-data-dir-missing", data_dir_cmd(["info"], lambda t: str(t / "nope"), ["does not exist"])),
        Case("resample-data-dir-file", data_dir_cmd(resample, lambda t: str(t / "a_file"), ["not a folder"])),
    ]

    # Corrupt or impossible stored data: the error names the file (and the row).
    def corrupt(rel: Path, damage: Callable[[Path], None], words: list[str], no_marks: bool = False):
        def build(tmp: Path):
            damage(tmp / rel)
            if no_marks:
                _drop_funding_marks(tmp)
            return backtest(tmp, "--json"), [str(tmp / rel), *words]

        return build

    def junk(path: Path) -> None:
        path.write_bytes(b"\x00not parquet" * 50)

    def zero_rows(path: Path) -> None:
        pl.read_parquet(path).head(0).write_parquet(path)

    cases += [
        Case("trade-truncated", corrupt(TRADE, _truncate, ["not a readable Parquet file"])),
        Case("trade-junk", corrupt(TRADE, junk, ["not a readable Parquet file"])),
        Case("trade-nan-close", corrupt(TRADE, lambda p: _set_value(p, "close", 9, np.nan), ["row 9"])),
        Case("trade-zero-rows", corrupt(TRADE, zero_rows, ["0 rows"])),
        Case("mark-truncated", corrupt(MARK, _truncate, ["Parquet"], no_marks=True)),
        Case("mark-junk", corrupt(MARK, junk, ["Parquet"], no_marks=True)),
        Case("mark-nan-open", corrupt(MARK, lambda p: _set_value(p, "open", 5, np.nan), ["row 5"], True)),
        Case("mark-negative-low", corrupt(MARK, lambda p: _set_value(p, "low", 7, -3.0), ["row 7"], True)),
        Case("funding-truncated", corrupt(FUNDING, _truncate, ["Parquet"])),
        Case("funding-zero-rows", corrupt(FUNDING, zero_rows, ["0 rows"])),
        Case(
            "funding-rate-500pct",
            corrupt(FUNDING, lambda p: _set_value(p, "rate", 3, 5.0), ["row 3", "rate"]),
        ),
        Case(
            "funding-rate-minus-10pct", corrupt(FUNDING, lambda p: _set_value(p, "rate", 4, -0.1), ["row 4"])
        ),
    ]

    # A partial sample store is never regenerated over.
    def partial(rel: Path, missing: str):
        def build(tmp: Path):
            shutil.rmtree((tmp / rel).parent)
            return backtest(tmp), ["incomplete", missing]

        return build

    cases += [
        Case("sample-without-funding", partial(FUNDING, "funding")),
        Case("sample-without-mark", partial(MARK, "mark-price candles")),
        Case("sample-without-trades", partial(TRADE, "trade candles")),
    ]

    # Markets too short for the strategy, and strategy/venue pairs that could never trade.
    def short(bars: int):
        def build(tmp: Path):
            _tiny_market(tmp, bars)
            return backtest(tmp, "--exchange", "tiny"), [f"only {bars} bar", "warm-up of 30 bars"]

        return build

    def low_leverage(tmp: Path):
        return backtest(tmp, "--venue", str(_low_leverage_venue(tmp))), ["trading.leverage", "5"]

    def min_order_above_ladder(tmp: Path):
        text = VENUE_TEXT.replace("min_order_size_usdt: 5.0 ", "min_order_size_usdt: 1000.0 ")
        assert text != VENUE_TEXT
        venue = _file(tmp, "big_orders.yaml", text.encode())
        return backtest(tmp, "--venue", str(venue)), [
            "grid.base_notional",
            "1000 USDT",
            "no order would ever",
        ]

    def validate_low_leverage(tmp: Path):
        venue = str(_low_leverage_venue(tmp))
        return ["config", "validate", "default", "--venue", venue], ["trading.leverage", "brackets"]

    def validate_huge_qty(tmp: Path):
        text = STRATEGY_TEXT.replace("base_notional: 150.0", "base_qty: 1e12")
        path = _file(tmp, "huge.yaml", text.encode())
        return ["config", "validate", str(path), "-v", "binance_futures"], ["grid.base_qty", "max_qty"]

    cases += [
        Case("one-bar-market", short(1)),
        Case("twenty-bar-market", short(20)),
        Case("base-qty-1e12", lambda t: (backtest(t, "--set", "grid.base_qty=1e12"), ["grid.base_qty"])),
        Case("base-qty-below-min", lambda t: (backtest(t, "--set", "grid.base_qty=1e-5"), ["min_qty"])),
        Case(
            "rung-above-max",
            lambda t: (
                backtest(t, "--set", "grid.qty_scale=3", "--set", "grid.base_qty=50"),
                ["grid.qty_scale", "max_qty"],
            ),
        ),
        Case("leverage-above-brackets", low_leverage),
        Case("min-order-above-every-rung", min_order_above_ladder),
        Case("validate-leverage-above-brackets", validate_low_leverage),
        Case("validate-base-qty-1e12", validate_huge_qty),
    ]

    # Round two (issue 17): crafted YAML, absurd numbers and data, damaged store files, weak messages.
    def config_file(name: str, text: str, *argv: str):
        def build(tmp: Path):
            path = str(_file(tmp, name, text.encode()))
            return [a.replace("{path}", path) for a in argv] + ["--data", str(tmp / "store")], [path]

        return build

    bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
    )
    cases += [
        Case(
            "balance-1e309",
            lambda t: (backtest(t, "--set", "backtest.initial_balance=1e309"), ["finite number"]),
        ),
        Case(
            "balance-1e308", lambda t: (backtest(t, "--set", "backtest.initial_balance=1e308"), ["less than"])
        ),
        Case("yaml-list-key", config_file("s.yaml", "[a, b]: 1\n", "backtest", "--config", "{path}")),
        Case(
            "yaml-deep",
            config_file("s.yaml", "a: " + "[" * 20_000 + "]" * 20_000, "backtest", "--config", "{path}"),
        ),
        Case("yaml-alias-bomb", config_file("s.yaml", bomb, "backtest", "--config", "{path}")),
        Case("venue-is-a-strategy", config_file("v.yaml", STRATEGY_TEXT, "backtest", "--venue", "{path}")),
        Case("strategy-is-a-venue", config_file("s.yaml", VENUE_TEXT, "backtest", "--config", "{path}")),
        Case(
            "config-dev-null",
            lambda t: (backtest(t, "--config", "/dev/null"), ["/dev/null", "character device"]),
        ),
        Case("config-is-a-folder", lambda t: (backtest(t, "--config", str(t / "store")), ["is a folder"])),
        Case("venue-tick-1e6", venue_tick_1e6),
        Case(
            "detail-1h-on-1m",
            lambda t: (
                backtest(t, "--set", "backtest.detail_timeframe=1h"),
                ["finer than the run's --timeframe 1m"],
            ),
        ),
        Case(
            "timerange", lambda t: (backtest(t, "--timerange", "20240101-20240201"), ["--start 2024-01-01"])
        ),
        Case("hyperopt", lambda t: (["hyperopt", "--epochs", "10"], ["gridctl optimize"])),
        # Numbers outside a flag's range: one line naming the flag, its range and the value.
        Case(
            "optimize-trials-0",
            lambda t: (
                ["optimize", "--profile", "wide", "--trials", "0"],
                ["--trials", "1..1000000", "got 0"],
            ),
        ),
        Case(
            "live-ops-port-70000",
            lambda t: (["live", "--live", "--ops-port", "70000"], ["--ops-port", "0..65535", "got 70000"]),
        ),
        Case(
            "sample-seed-minus-1",
            lambda t: (
                ["data", "sample", "--data-dir", str(t / "store"), "--seed", "-1"],
                ["--seed", "0..4294967295", "got -1"],
            ),
        ),
    ]

    def fifo(path: Path) -> None:
        path.unlink()
        os.mkfifo(path)

    def string_ts(path: Path) -> None:
        df = pl.read_parquet(path)
        df.with_columns(pl.col("ts").cast(pl.String)).write_parquet(path)

    def rename_13(path: Path) -> None:
        path.rename(path.with_name("2024-13.parquet"))

    def percent_funding_row(path: Path) -> None:
        rate = np.abs(pl.read_parquet(path)["rate"].to_numpy())
        value = max(0.005, 60 * max(rate[0:3].max(), rate[4:7].max()))  # 60x every neighbour, under the cap
        assert value < 0.05
        _set_value(path, "rate", 3, value)

    cases += [
        Case(
            "trade-bar-at-1e300",
            corrupt(TRADE, lambda p: _set_value(p, "high", 9, 1e300), ["row 9", "1e+300"]),
        ),
        Case(
            "trade-1969-row", corrupt(TRADE, lambda p: _set_value(p, "ts", 0, -60_000), ["row 0", "outside"])
        ),
        Case("trade-string-ts", corrupt(TRADE, string_ts, ["column 'ts' must be integer"])),
        Case("trade-fifo", corrupt(TRADE, fifo, ["FIFO"])),
        Case(
            "funding-percent-row",
            corrupt(FUNDING, percent_funding_row, ["row 3", "percent written as a fraction"]),
        ),
        Case("trade-partition-2024-13", lambda t: (rename_13(t / TRADE), (backtest(t), ["2024-13"]))[1]),
        Case(
            "sample-shorter-over-stored",
            lambda t: (["data", "sample", "--data-dir", str(t / "store"), "--days", "2"], ["--force"]),
        ),
    ]

    # Values that do not parse: one line, naming the override.
    for text in ["grid.base_qty=[1,", "grid.base_qty={a: [", "grid.base_qty='x", "grid.base_qty=- - ["]:
        cases.append(
            Case(f"set-yaml-{text}", lambda t, text=text: (backtest(t, "--set", text), ["--set", text]))
        )
        cases.append(
            Case(f"show-set-yaml-{text}", lambda t, text=text: (["config", "show", "--set", text], [text]))
        )
    return cases


CASES = _cases()


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (-1, 0)
        for p in root.rglob("*")
    }


def _check_refusal(exit_code: int, stderr: str, words: list[str]) -> None:
    assert exit_code == 2, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    assert all(line.startswith(STATUS_PREFIXES) for line in lines[:-1]), stderr
    for word in words:
        assert word in errors[0], (word, errors[0])


@pytest.fixture
def case_dir(tmp_path: Path, sample_store: Path) -> Path:
    shutil.copytree(sample_store, tmp_path / "store")
    return tmp_path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused_with_one_line_and_nothing_written(case: Case, case_dir: Path) -> None:
    argv, words = case.build(case_dir)
    before = _snapshot(case_dir)
    result = CliRunner().invoke(app, argv)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    _check_refusal(result.exit_code, result.stderr, words)
    assert _snapshot(case_dir) == before
    assert result.stdout == ""
    for path in case.forbidden:
        assert not os.path.lexists(path)


SUBPROCESS_CASES = [
    "non-utf8-strategy-latin1-comment-line-3-validate",
    "non-utf8-venue-random-bytes-backtest-venue-json",
    "out-under-a-file",
    "out-under-proc",
    "mark-junk",
    "sample-without-funding",
    "set-yaml-grid.base_qty=[1,",
    "download-data-dir-under-file",
    "balance-1e309",
    "venue-is-a-strategy",
    "trade-fifo",
    "timerange",
    "optimize-trials-0",
    "live-ops-port-70000",
]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_hostile_input_in_a_real_gridctl_process(case_id: str, case_dir: Path) -> None:
    case = next(c for c in CASES if c.id == case_id)
    argv, words = case.build(case_dir)
    before = _snapshot(case_dir)
    exe = Path(sys.executable).parent / "gridctl"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from gridctl.cli import app; app()"]
    proc = subprocess.run([*cmd, *argv], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    _check_refusal(proc.returncode, proc.stderr, words)
    assert proc.stdout == "" and _snapshot(case_dir) == before
