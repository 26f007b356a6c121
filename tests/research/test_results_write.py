"""research.results: labelled frames with DESIGN.md's columns; result files written whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import gridctl.research.results
from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import load_strategy, load_venue
from gridctl.data.market import load_market
from gridctl.data.sample import SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME, write_sample
from gridctl.engine.enums import EventKind, Reason
from gridctl.engine.records import EVENT_DTYPE
from gridctl.engine.run import run_single
from gridctl.research.results import RESULT_FILES, record_frame, result_frames, write_results
from gridctl.research.stats import compute_stats

# DESIGN.md "Engine records": column names in order; enum columns are written as labels.
SCHEMAS = {
    "fills": {
        "ts": pl.Int64, "side": pl.String, "kind": pl.String, "level": pl.Int16, "price": pl.Float64,
        "qty": pl.Float64, "fee": pl.Float64, "liquidity": pl.String, "realized_pnl": pl.Float64,
    },
    "funding": {
        "ts": pl.Int64, "side": pl.String, "rate": pl.Float64, "mark_price": pl.Float64,
        "mark_source": pl.String, "qty": pl.Float64, "amount": pl.Float64,
    },
    "equity": {
        "ts": pl.Int64, "equity": pl.Float64, "wallet_balance": pl.Float64, "unrealized_pnl": pl.Float64,
        "long_qty": pl.Float64, "short_qty": pl.Float64, "regime": pl.String, "state": pl.String,
        "margin_ratio": pl.Float64,
    },
    "events": {
        "ts": pl.Int64, "kind": pl.String, "reason": pl.String, "side": pl.String, "level": pl.Int16,
        "price": pl.Float64, "qty": pl.Float64, "value": pl.Float64,
    },
}  # fmt: skip
LABELS = {
    ("fills", "side"): {"long", "short"},
    ("fills", "kind"): {"entry", "tp", "sl", "flatten", "liquidation"},
    ("fills", "liquidity"): {"maker", "taker"},
    ("funding", "side"): {"long", "short"},
    ("funding", "mark_source"): {"mark_series", "trade_open"},
    ("equity", "regime"): {"sideways", "up", "down"},
    ("equity", "state"): {"normal", "reducing", "cooldown", "halted", "liquidated"},
}


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("sample")
    write_sample(data_dir, days=10)
    market = load_market(data_dir, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME)
    # A 2 % drawdown limit with big rungs halts the run, so events and a flatten fill are in the ledgers.
    strategy = load_strategy("default", ["grid.base_qty=0.03", "risk_management.max_drawdown_pct=2"])
    venue = load_venue("binance_futures", ["trading.leverage=20"])
    run = run_single(market, strategy, venue, curves=True)
    return run, market, compute_stats(run, market, strategy, venue)


def test_written_files_have_design_schemas_and_the_runs_rows(result, tmp_path: Path) -> None:
    run, market, stats = result
    paths = write_results(tmp_path / "out", run, market, stats)
    assert [p.name for p in paths] == list(RESULT_FILES)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(RESULT_FILES)
    for table, schema in SCHEMAS.items():
        frame = pl.read_parquet(tmp_path / "out" / f"{table}.parquet")
        assert dict(frame.schema) == schema, table
        assert frame.height == len(getattr(run, table)) > 0, table
        for (t, col), allowed in LABELS.items():
            if t == table:
                assert set(frame[col].unique().to_list()) <= allowed, (table, col)
    fills = pl.read_parquet(tmp_path / "out" / "fills.parquet")
    assert np.array_equal(fills["price"].to_numpy(), run.fills["price"])
    assert "flatten" in fills["kind"].to_list()  # the halt flattened a position
    assert "halted" in pl.read_parquet(tmp_path / "out" / "equity.parquet")["state"].to_list()
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == json.loads(json.dumps(stats))


def test_event_labels_and_no_side_is_null() -> None:
    ev = np.array(
        [
            (1, EventKind.RECENTER, Reason.NONE, -1, 0, 100.0, 0.0, 99.0),
            (2, EventKind.ORDER_REJECTED, Reason.SIZE_BRACKET, 1, 3, 101.0, 0.5, 0.0),
        ],
        dtype=EVENT_DTYPE,
    )
    frame = record_frame("events", ev)
    assert frame["kind"].to_list() == ["recenter", "order_rejected"]
    assert frame["reason"].to_list() == ["none", "size_bracket"]
    assert frame["side"].to_list() == [None, "short"]
    assert frame["level"].to_list() == [0, 3]


def test_frames_refuse_arrays_of_another_dtype(result) -> None:
    run, _, _ = result
    with pytest.raises(ValueError, match="fills: expected dtype"):
        record_frame("fills", run.funding)
    assert set(result_frames(run)) == {"fills", "funding", "equity", "events"}


def test_a_failed_render_writes_nothing_and_keeps_old_results(result, tmp_path, monkeypatch) -> None:
    run, market, stats = result
    out = tmp_path / "out"
    write_results(out, run, market, stats)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*_args, **_kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(gridctl.research.results, "build_report", broken)
    changed = dict(stats, final_equity=-1.0)
    with pytest.raises(RuntimeError, match="render failed"):
        write_results(out, run, market, changed, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("interrupt", [OSError("disk full"), KeyboardInterrupt()])
@pytest.mark.parametrize("failing_file", [1, 3, len(RESULT_FILES)])
def test_an_interrupted_write_leaves_nothing_and_no_staging_folder(
    result, tmp_path, monkeypatch, interrupt: BaseException, failing_file: int
) -> None:
    run, market, stats = result
    calls = {"n": 0}
    real_fsync = gridctl.research.results.os.fsync

    def fsync_failing(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == failing_file:
            raise interrupt
        real_fsync(fd)

    monkeypatch.setattr(gridctl.research.results.os, "fsync", fsync_failing)
    with pytest.raises(type(interrupt)):
        write_results(tmp_path / "out", run, market, stats)
    monkeypatch.undo()
    assert _entries(tmp_path) == []  # no partial folder, no hidden staging folder


@pytest.mark.parametrize("interrupt", [OSError("disk full"), KeyboardInterrupt()])
def test_an_interrupted_replace_keeps_the_old_results_whole(result, tmp_path, monkeypatch, interrupt) -> None:
    run, market, stats = result
    out = tmp_path / "out"
    write_results(out, run, market, stats)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace = gridctl.research.results.os.replace
    calls = {"n": 0}

    def replace_failing_second(src, dst) -> None:
        calls["n"] += 1  # 1: old folder aside, 2: new folder in (fails), 3: old folder back
        if calls["n"] == 2:
            raise interrupt
        real_replace(src, dst)

    monkeypatch.setattr(gridctl.research.results.os, "replace", replace_failing_second)
    with pytest.raises(type(interrupt)):
        write_results(out, run, market, dict(stats, final_equity=-1.0), force=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _entries(tmp_path) == ["out"]


def test_existing_results_need_force_and_are_then_replaced_whole(result, tmp_path) -> None:
    run, market, stats = result
    out = tmp_path / "out"
    write_results(out, run, market, stats)
    with pytest.raises(GridctlError, match=r"already holds results; pass --force"):
        write_results(out, run, market, dict(stats, final_equity=-1.0))
    assert json.loads((out / "stats.json").read_text())["final_equity"] == stats["final_equity"]
    write_results(out, run, market, dict(stats, final_equity=-1.0), force=True)
    assert json.loads((out / "stats.json").read_text())["final_equity"] == -1.0
    assert _entries(out) == sorted(RESULT_FILES) and _entries(tmp_path) == ["out"]


@pytest.mark.parametrize("force", [False, True])
def test_a_folder_with_other_files_is_never_replaced(result, tmp_path, force: bool) -> None:
    run, market, stats = result
    out = tmp_path / "home"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "stats.json").write_text("{}")
    with pytest.raises(GridctlError, match=r"not backtest results \(notes.txt\)"):
        write_results(out, run, market, stats, force=force)
    assert (out / "notes.txt").read_text() == "mine" and (out / "stats.json").read_text() == "{}"


def test_an_empty_existing_folder_is_filled(result, tmp_path) -> None:
    run, market, stats = result
    (tmp_path / "out").mkdir()
    write_results(tmp_path / "out", run, market, stats)
    assert _entries(tmp_path / "out") == sorted(RESULT_FILES)
