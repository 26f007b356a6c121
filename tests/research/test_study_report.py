"""research.study_report: figures and the self-contained HTML page of an Optuna study.

The studies are real: trials scored by engine.batch.run_batch on 35 days of the sample market, stored
in a journal file and loaded back the way ``gridctl study report`` and the notebook load them.
"""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import optuna
import pytest

from gridctl.configs.errors import GridctlError
from gridctl.research.optimize_cli import overfitting_lines
from gridctl.research.study_report import (
    MIN_TRIALS_FOR_IMPORTANCE,
    REPORT_FILE,
    importance_figure,
    is_oos_table,
    open_study,
    overfitting,
    overfitting_rows,
    param_importances,
    pareto_figure,
    render_study_report,
    study_figures,
    top_trials,
)

from study_builders import build_study, sample_market, window


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory):
    return sample_market(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def journal_study(market, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, optuna.Study]:
    """A 12-trial single-objective study written to a journal file, then opened from that file."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path_factory.mktemp("journal") / "probe.journal"
    build_study(market, 12, storage=JournalStorage(JournalFileBackend(str(path))), name="probe")
    return path, open_study("probe", journal=path)


@pytest.fixture(scope="module")
def multi_study(market) -> optuna.Study:
    return build_study(market, 10, name="multi", multi=True, returns=False)


def _tiny_study(n: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    study.optimize(lambda t: t.suggest_float("grid.grid_step_bps", 10, 90), n_trials=n)
    return study


def test_top_trials_are_the_best_by_the_objective(journal_study) -> None:
    _, study = journal_study
    values = {t.number: t.value for t in study.trials}
    want = sorted(values, key=lambda n: -values[n])[:5]
    assert [t.number for t in top_trials(study, 5)] == want


def test_multi_objective_top_trials_start_with_the_pareto_front(multi_study) -> None:
    trials = multi_study.trials

    def dominated(t) -> bool:  # maximise equity, minimise drawdown
        return any(
            o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values for o in trials
        )

    front = [t.number for t in trials if not dominated(t)]
    top = [t.number for t in top_trials(multi_study, len(trials))]
    assert set(top[: len(front)]) == set(front) and len(top) == len(trials)
    # Within the front: highest equity first.
    equity = {t.number: t.values[0] for t in trials}
    assert [equity[n] for n in top[: len(front)]] == sorted((equity[n] for n in front), reverse=True)
    fig = pareto_figure(multi_study)
    assert fig is not None and sum(len(tr.x) for tr in fig.data) == len(trials)


def test_a_study_too_small_gets_a_note_instead_of_importances(tmp_path: Path) -> None:
    small = _tiny_study(MIN_TRIALS_FOR_IMPORTANCE - 1)
    fig = importance_figure(small)
    assert len(fig.data) == 0
    assert f"at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials" in fig.layout.annotations[0].text
    assert f"has {MIN_TRIALS_FOR_IMPORTANCE - 1})" in fig.layout.annotations[0].text
    with pytest.raises(GridctlError, match="at least"):
        param_importances(small)
    # A parameter that never varies says nothing about importance.
    flat = optuna.create_study()
    flat.optimize(lambda t: t.suggest_int("exit.tp_steps", 3, 3) + t.number, n_trials=12)
    assert "more than one value" in importance_figure(flat).layout.annotations[0].text
    # An empty study still renders a page.
    page = render_study_report(optuna.create_study(study_name="empty"), tmp_path / "empty")
    assert "no completed trials" in page.read_text(encoding="utf-8")


def test_importances_are_reproducible_and_cover_every_parameter(journal_study) -> None:
    _, study = journal_study
    first = param_importances(study)
    assert first == param_importances(study)  # no random part: same study, same numbers
    assert set(first) == {"grid.grid_step_bps", "exit.tp_steps"}
    assert math.isclose(sum(first.values()), 1.0)
    (bars,) = importance_figure(study).data
    assert dict(zip(bars.y, bars.x, strict=True)) == first


def test_in_sample_and_out_of_sample_pair_the_stored_metrics(journal_study) -> None:
    _, study = journal_study
    keys, rows = is_oos_table(study.trials)
    assert keys == ["final_equity", "max_drawdown_bar_close_pct", "n_entries", "sharpe"]
    for row, trial in zip(rows, study.trials, strict=True):
        assert row["trial"] == trial.number
        assert row["final_equity IS"] == trial.user_attrs["is_metrics"]["final_equity"]
        assert row["final_equity OOS"] == trial.user_attrs["oos_metrics"]["final_equity"]
    # The halves are different markets: in- and out-of-sample equity differ for every trial.
    assert all(r["final_equity IS"] != r["final_equity OOS"] for r in rows)
    # A trial without both attrs has no row.
    assert is_oos_table(_tiny_study(2).trials) == ([], [])


def _returns_study(returns: dict[int, list[float]], on_study: bool) -> optuna.Study:
    """Trials valued by their mean daily return, returns stored on the trials or on the study."""
    study = optuna.create_study(direction="maximize")
    for n, r in returns.items():
        t = study.ask({"x": optuna.distributions.FloatDistribution(0, 10)})
        assert t.number == n
        if not on_study:
            t.set_user_attr("daily_returns", r)
        study.tell(t, float(np.mean(r)))
    if on_study:
        study.set_user_attr("daily_returns", {str(n): r for n, r in returns.items()})
    return study


@pytest.mark.parametrize("on_study", [False, True])
def test_overfitting_feeds_dsr_and_pbo_the_right_inputs(on_study: bool) -> None:
    from gridctl.research.overfitting import overfitting_report, probability_of_backtest_overfitting

    rng = np.random.default_rng(5)
    base = rng.normal(0.0, 0.01, size=(64, 4))
    base[:, 0] += 0.02  # trial 0 is best on every day: in every split the IS winner is the OOS winner
    returns = {n: base[:, n].tolist() for n in range(4)}
    study = _returns_study(returns, on_study)
    out = overfitting(study)
    assert out["selected_trial"] == 0 and out["periods"] == 64 and out["trials_used"] == 4
    assert out["pbo"] == 0.0 and out["pbo_blocks"] == 16
    sr = base.mean(axis=0) / base.std(axis=0, ddof=1)
    assert out["sharpe"] == pytest.approx(sr[0])
    # The same implementation as every other view, fed this study's returns and winner.
    assert out == overfitting_report(base, [0, 1, 2, 3], 0)
    assert probability_of_backtest_overfitting(base, n_blocks=16) == out["pbo"]
    assert overfitting(_tiny_study(3)) is None  # no returns: nothing to say


def test_infeasible_trials_are_left_out_of_the_top_table_the_best_and_the_statistics(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    base = rng.normal(0.0, 0.01, size=(64, 4))
    base[:, 2] += 0.05  # trial 2 has the best value, but breaks a hard limit
    study = optuna.create_study(direction="maximize")
    for n in range(4):
        t = study.ask({"x": optuna.distributions.FloatDistribution(0, 10)})
        t.set_user_attr("daily_returns", base[:, n].tolist())
        # what gridctl optimize writes: one list, <= 0 satisfied (optuna-dashboard reads this key)
        study._storage.set_trial_system_attr(t._trial_id, "constraints", [5.0 if n == 2 else -1.0])
        study.tell(t, float(np.mean(base[:, n])))
    assert study.best_trial.number != 2  # Optuna reads the list as its constraints too
    assert 2 not in [t.number for t in top_trials(study, 4)] and len(top_trials(study, 4)) == 3
    out = overfitting(study)
    assert out["selected_trial"] == study.best_trial.number and out["trials_used"] == 3
    text = render_study_report(study, tmp_path / "r").read_text(encoding="utf-8")
    table = text.split("<h2>Top 5 feasible trials</h2>", 1)[1].split("</table>", 1)[0]
    assert [int(n) for n in re.findall(r"<tr><td>(\d+)</td>", table)] == [t.number for t in top_trials(study)]
    assert "1 completed trial(s) break a hard limit" in text


def test_overfitting_says_why_with_too_few_days() -> None:
    study = _returns_study({0: [0.01, 0.02, -0.01], 1: [0.0, 0.01, 0.0]}, on_study=False)
    out = overfitting(study)
    assert out["pbo"] is None and any("not enough data for PBO" in n for n in out["notes"])
    assert out["deflated_sharpe"] is not None


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.srcs += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag == "div" and a.get("id", "").startswith("chart-"):
            self.ids.append(a["id"])


def test_report_page_has_every_chart_table_and_plotly_once(journal_study, tmp_path: Path) -> None:
    _, study = journal_study
    page = render_study_report(study, tmp_path / "out", top_k=3)
    assert page == tmp_path / "out" / REPORT_FILE
    text = page.read_text(encoding="utf-8")
    tags = _Tags()
    tags.feed(text)
    assert tags.srcs == []  # nothing linked or loaded: plotly.js is inline
    assert text.count("plotly.js v") == 1
    assert tags.ids == [
        "chart-history-0",
        "chart-importance-0",
        "chart-parallel",
        "chart-is-oos",
    ]
    # The top-3 table lists the best three trials in order, with their values.
    best = top_trials(study, 3)
    table = text.split("<h2>Top 3 feasible trials</h2>", 1)[1].split("</table>", 1)[0]
    cells = re.findall(r"<tr><td>(\d+)</td><td>([^<]*)</td>", table)
    assert [int(n) for n, _ in cells] == [t.number for t in best]
    assert [float(v) for _, v in cells] == [float(f"{t.value:.6g}") for t in best]
    assert "In-sample vs out-of-sample" in text and "deflated Sharpe ratio" in text
    # 35 days of returns per trial: enough for the deflated Sharpe ratio and 16-block PBO.
    over = overfitting(study)
    assert 0.0 <= over["pbo"] <= 1.0 and 0.0 <= over["deflated_sharpe"] <= 1.0 and over["periods"] == 35
    row = re.search(r"<td>probability of backtest overfitting[^<]*</td><td>([^<]*)</td>", text).group(1)
    assert float(row) == pytest.approx(over["pbo"], rel=1e-5)


def test_multi_objective_report_adds_the_pareto_front(multi_study, tmp_path: Path) -> None:
    ids = [fid for fid, _ in study_figures(multi_study)]
    assert ids == ["history-0", "history-1", "importance-0", "importance-1", "parallel", "pareto", "is-oos"]
    text = render_study_report(multi_study, tmp_path).read_text(encoding="utf-8")
    assert 'id="chart-pareto"' in text and "Overfitting" not in text  # this study stored no returns


def test_open_study_fails_loudly(tmp_path: Path, journal_study) -> None:
    path, _ = journal_study
    with pytest.raises(GridctlError, match="no such journal file"):
        open_study("probe", journal=tmp_path / "missing.journal")
    with pytest.raises(GridctlError, match="no study named 'nope'"):
        open_study("nope", journal=path)
    with pytest.raises(GridctlError, match="not both"):
        open_study("probe", journal=path, storage="sqlite://")
    # By name alone: the journal in the gridctl studies directory.
    assert open_study("probe", studies_dir=path.parent).study_name == "probe"
    with pytest.raises(GridctlError, match="no such journal file"):
        open_study("probe", studies_dir=tmp_path)
    with pytest.raises(GridctlError, match="is not a directory"):
        (tmp_path / "file").write_text("x")
        render_study_report(optuna.create_study(), tmp_path / "file")


def test_equity_reruns_apply_the_overrides_a_trial_ran_with(market) -> None:
    from gridctl.configs.loader import load_strategy, load_venue
    from gridctl.configs.overrides import apply_overrides
    from gridctl.engine.run import run_single
    from gridctl.research.study_report import top_equity_figure, trial_overrides

    small = window(market, 0, 3 * 1440)
    dist = {"grid.grid_step_bps": optuna.distributions.FloatDistribution(10, 90)}
    study = optuna.create_study(direction="maximize")
    # gridctl optimize records the exact overrides it ran; a plain study's trial ran its params.
    study.add_trial(
        optuna.trial.create_trial(
            params={"grid.grid_step_bps": 40.0},
            distributions=dist,
            value=2.0,
            user_attrs={"gridctl": {"overrides": {"grid.grid_step_bps": 25.0}, "sharpe": 1.0}},
        )
    )
    study.add_trial(
        optuna.trial.create_trial(params={"grid.grid_step_bps": 60.0}, distributions=dist, value=1.0)
    )
    first, second = study.trials
    assert trial_overrides(first) == {"grid.grid_step_bps": 25.0}
    assert trial_overrides(second) == {"grid.grid_step_bps": 60.0}
    strategy, venue = load_strategy("default"), load_venue("binance_futures")
    fig = top_equity_figure(study, small, strategy, venue, top_k=2)
    assert [t.name for t in fig.data] == ["trial 0", "trial 1"]

    def final_equity(step: float) -> float:
        s, v = apply_overrides(strategy, venue, {"grid.grid_step_bps": step})
        return float(run_single(small, s, v, curves=True).equity["equity"][-1])

    assert fig.data[0].y[-1] == final_equity(25.0) != final_equity(40.0)
    assert fig.data[1].y[-1] == final_equity(60.0)


def test_the_report_and_study_show_print_the_same_returns_window_with_a_partial_last_day() -> None:
    """A window from 2024-01-02 00:00 to 2024-02-05 16:00 (1h data stopping mid-day) ends, exclusive, on
    2024-02-06: the report rounded the partial day down to 2024-02-05 while `study show` rounded it up."""
    win = {"start_ms": 1_704_153_600_000, "end_ms": 1_707_148_800_000, "days": 34, "holdout_excluded": False}
    assert win["end_ms"] == 1_704_153_600_000 + (34 * 24 + 16) * 3_600_000
    (row,) = [r for r in overfitting_rows({"returns_window": win}) if r[0].startswith("daily returns over")]
    assert row[1] == "2024-01-02 .. 2024-02-06 (34 days)"
    shown = overfitting_lines({"returns_window": win})[-1]
    assert shown == "  both from daily returns over 2024-01-02..2024-02-06 (34 days)"
    midnight = win | {"end_ms": 1_704_153_600_000 + 34 * 86_400_000, "holdout_excluded": True}
    (row,) = [r for r in overfitting_rows({"returns_window": midnight}) if r[0].startswith("daily returns")]
    assert row[1] == "2024-01-02 .. 2024-02-05 (34 days; hold-out left out)"
