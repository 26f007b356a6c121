"""One truth in every view of a gridctl study: `study show` (text and --json), `study report`, the
notebook (`study notebook`) and the library give the same deflated Sharpe ratio and PBO with the same
inputs; the backtest and the optimizer the same Calmar; export, report and notebook never overwrite
without --force and refuse a bad --out before anything is written.

The study is a real `gridctl optimize` study on 20 days of the sample market (a short study: CSCV
must choose fewer blocks than its 16, not fail).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gridctl.cli import app
from gridctl.configs.loader import load_strategy, load_venue
from gridctl.data.market import load_market
from gridctl.data.sample import SAMPLE_EXCHANGE, SAMPLE_SYMBOL, write_sample
from gridctl.engine.batch import run_batch
from gridctl.engine.run import run_single
from gridctl.research.objectives import row_metrics
from gridctl.research.profiles import PROFILES_DIR
from gridctl.research.stats import compute_stats
from gridctl.research.studies import distinct_feasible_trials, load_study
from gridctl.research.study_report import overfitting

DAYS = 20
NAME = "views"


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 24-trial `wide` study over all 20 days of the sample, and its `study show --json`."""
    root = tmp_path_factory.mktemp("views")
    data = root / "data"
    write_sample(data, days=DAYS)
    tree = yaml.safe_load((PROFILES_DIR / "wide.yaml").read_text())
    tree.update(name="views", trials=24, batch_size=8)
    tree["limits"]["min_trades"] = 1
    prof = root / "views.yaml"
    prof.write_text(yaml.safe_dump(tree, sort_keys=False))
    sd = root / "studies"
    res = _cli("optimize", "--profile", str(prof), "--data", str(data), "--studies-dir", str(sd),
               "--study-name", NAME, "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    show = _cli("study", "show", NAME, "--studies-dir", str(sd), "--data", str(data), "--json")
    assert show.exit_code == 0, show.stderr
    return {"root": root, "data": data, "sd": sd, "shown": json.loads(show.stdout)}


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    keys = ("deflated_sharpe", "pbo", "selected_trial", "sharpe", "sr0", "clusters", "trials_used",
            "periods", "sharpe_variance", "pbo_blocks", "skew", "kurtosis")  # fmt: skip
    for k in keys:
        assert a[k] == pytest.approx(b[k], rel=1e-12), k


def test_a_short_study_shows_dsr_and_pbo_over_every_distinct_feasible_trial(made: dict[str, Any]) -> None:
    shown = made["shown"]
    study = load_study(NAME, made["sd"])
    # Feasible read from the list optuna-dashboard reads; Sobol draws are distinct configurations.
    feasible = [
        t
        for t in study.trials
        if t.state.name == "COMPLETE" and all(c <= 0 for c in t.system_attrs["constraints"])
    ]
    assert 0 < len(feasible) < 24  # the drawdown limit splits this study
    assert [t.number for t in distinct_feasible_trials(study)] == [t.number for t in feasible]
    # wide runs the other intrabar rules for contenders only: the rest ran their configured rule, lost
    # to the winner and count too, unless their own metrics break a limit (min_trades 1, drawdown 40 %,
    # no liquidation, same-bar share 25 %, all at least as bad under the worst rule)
    unchecked = [
        t
        for t in study.trials
        if t.state.name == "PRUNED"
        and (m := t.user_attrs["gridctl"]["metrics"])["trades"] >= 1
        and m["max_drawdown_bar_close_pct"] <= 40
        and m["liquidated"] == 0
        and m["same_bar_profit_share_pct"] <= 25
    ]
    assert all(
        t.user_attrs["gridctl"]["path_checked"] is False for t in study.trials if t.state.name == "PRUNED"
    )
    # all of them, never a top-K: used + flat ones = every one of them
    pool = len(feasible) + len(unchecked)
    assert shown["trials_used"] + shown["trials_without_dispersion"] == pool
    assert shown["trials_feasible_distinct"] == len(feasible) and shown["trials_sampled_from"] is None
    assert shown["trials_configured_rule_only"] == len(unchecked)
    # 20 daily returns: 10 CSCV blocks of 2 days (C(10, 5) = 252 splits), not a failure
    assert shown["periods"] == DAYS and shown["pbo_blocks"] == 10 and shown["pbo_splits"] == 252
    assert 0.0 <= shown["pbo"] <= 1.0 and 0.0 <= shown["deflated_sharpe"] <= 1.0
    assert shown["selected_trial"] == shown["best_trial"]
    assert 1 <= shown["clusters"] <= shown["trials_used"]
    assert shown["sr0_annualised"] == pytest.approx(shown["sr0"] * math.sqrt(365))
    # The winner's Sharpe ratio from its re-run daily returns is the one the kernel scored it with
    # (annualised daily Sharpe, the kernel's own accumulators): two implementations, one number.
    top = shown["leaderboard"][0]
    assert top["number"] == shown["selected_trial"]
    assert shown["sharpe_annualised"] == pytest.approx(top["metrics"]["sharpe"], rel=1e-9)
    text = _cli("study", "show", NAME, "--studies-dir", str(made["sd"]), "--data", str(made["data"])).stdout
    assert f"N = {shown['clusters']} correlation clusters" in text and "10 blocks, 252 splits" in text


def test_library_report_and_notebook_give_shows_numbers(made: dict[str, Any]) -> None:
    shown = made["shown"]
    study = load_study(NAME, made["sd"])
    _same(overfitting(study, made["data"]), shown)
    out = made["root"] / "rep"
    rep = _cli("study", "report", NAME, "--studies-dir", str(made["sd"]), "--data", str(made["data"]),
               "--out", str(out))  # fmt: skip
    assert rep.exit_code == 0, rep.stderr
    page = (out / "index.html").read_text(encoding="utf-8")
    dsr = page.split("<td>deflated Sharpe ratio (selected trial)</td><td>", 1)[1].split("<", 1)[0]
    assert float(dsr) == pytest.approx(shown["deflated_sharpe"], rel=1e-5)
    clusters = page.split("<td>independent trials N (correlation clusters)</td><td>", 1)[1].split("<", 1)[0]
    assert int(clusters) == shown["clusters"]
    assert "daily_returns" not in load_study(NAME, made["sd"]).user_attrs  # the report wrote nothing
    nb_out = made["root"] / "nb" / "views.ipynb"
    res = _cli("study", "notebook", NAME, "--studies-dir", str(made["sd"]), "--data", str(made["data"]),
               "--out", str(nb_out), "--top", "3")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    nb = json.loads(nb_out.read_text(encoding="utf-8"))
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    last = json.loads("".join(nb["cells"][-1]["outputs"][-1]["text"]).strip().splitlines()[-1])
    _same(last["overfitting"], shown)
    assert "equity" in last["figures"]  # the top trials re-ran on the study's own market, by name alone


def test_backtest_and_optimizer_report_one_calmar(tmp_path: Path) -> None:
    write_sample(tmp_path, days=6)
    market = load_market(tmp_path, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, "1m")
    strategy, venue = load_strategy("default"), load_venue("binance_futures")
    stats = compute_stats(run_single(market, strategy, venue), market, strategy, venue)
    metrics = row_metrics(run_batch(market, strategy, venue, [{}])[0], market.bar_ms)
    assert stats["max_drawdown_bar_close_pct"] > 0.0
    assert stats["max_drawdown_bar_close_pct"] != pytest.approx(stats["max_drawdown_daily_close_pct"])
    # CAGR / bar-close drawdown in both (the daily-close drawdown would give another number)
    assert stats["calmar"] == pytest.approx(stats["cagr_pct"] / stats["max_drawdown_bar_close_pct"])
    assert stats["calmar"] == pytest.approx(metrics["calmar"], rel=1e-9)


def test_outputs_are_never_overwritten_without_force_and_a_bad_out_writes_nothing(
    made: dict[str, Any],
) -> None:
    root, sd = made["root"], str(made["sd"])
    journal = made["sd"] / f"{NAME}.journal"
    target = root / "best.yaml"
    assert _cli("study", "export", NAME, "--studies-dir", sd, "--out", str(target)).exit_code == 0
    target.write_text("# mine\n")
    res = _cli("study", "export", NAME, "--studies-dir", sd, "--out", str(target))
    assert res.exit_code == 2 and "already exists; add --force" in res.stderr
    assert target.read_text() == "# mine\n"
    assert _cli("study", "export", NAME, "--studies-dir", sd, "--out", str(target), "--force").exit_code == 0
    assert load_strategy(target).strategy.name.startswith(f"{NAME}-trial")

    before = journal.read_bytes()
    folder = root / "rep2"
    folder.mkdir()
    (folder / "index.html").write_text("mine")
    args = ("study", "report", NAME, "--studies-dir", sd, "--data", str(made["data"]))
    res = _cli(*args, "--out", str(folder))
    assert res.exit_code == 2 and "already holds index.html; add --force" in res.stderr
    assert (folder / "index.html").read_text() == "mine"
    (root / "afile").write_text("x")
    for bad in (root / "afile", root / "afile" / "sub"):
        res = _cli(*args, "--out", str(bad))
        assert res.exit_code == 2 and str(root / "afile") in res.stderr
    assert journal.read_bytes() == before  # nothing was written to the study
    assert _cli(*args, "--out", str(folder), "--force").exit_code == 0
    assert "Overfitting" in (folder / "index.html").read_text(encoding="utf-8")

    nb = root / "x.ipynb"
    nb.write_text("{}")
    res = _cli("study", "notebook", NAME, "--studies-dir", sd, "--out", str(nb))
    assert res.exit_code == 2 and "already exists; add --force" in res.stderr and nb.read_text() == "{}"
    assert journal.read_bytes() == before


def test_constraints_read_the_same_from_the_list_and_from_optunas_named_keys() -> None:
    import optuna

    from gridctl.research.optimize import CONSTRAINT_NAMES, feasible_trial, named_constraints

    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    values = [-3.0, 2.5, -0.5]  # too few trades: no; drawdown over the limit: yes; liquidation: no

    def frozen(system_attrs: dict[str, Any]) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(
            params={"x": 0.5}, distributions=dist, value=1.0, system_attrs=system_attrs
        )

    listed = frozen({"constraints": values})  # what gridctl optimize writes now
    named = frozen({f"constraints:{n}": v for n, v in zip(CONSTRAINT_NAMES, values, strict=False)})  # older
    want = {"min_trades": -3.0, "max_drawdown_bar_close_pct": 2.5, "liquidation": -0.5}
    assert named_constraints(listed) == named_constraints(named) == want
    assert not feasible_trial(listed) and not feasible_trial(named)
    assert feasible_trial(frozen({"constraints": [-1.0, 0.0, -0.5]}))  # 0 is satisfied


def test_a_repeated_configuration_counts_once_and_the_winner_stands_for_its_own(made: dict[str, Any]) -> None:
    import optuna

    from gridctl.research.optimize import ATTR, open_storage

    memory = optuna.storages.InMemoryStorage()  # a copy: the module's study stays as it is
    optuna.copy_study(
        from_study_name=NAME, from_storage=open_storage(NAME, None, made["sd"]), to_storage=memory
    )
    study = optuna.load_study(study_name=NAME, storage=memory)
    first, later = distinct_feasible_trials(study)[:2]
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    overrides = first.user_attrs[ATTR]["overrides"]
    copy = optuna.trial.create_trial(
        params={"x": 0.5}, distributions=dist, value=0.0,
        user_attrs={ATTR: {"overrides": overrides}}, system_attrs={"constraints": [-1.0]},
    )  # fmt: skip
    study.add_trial(copy)  # the same configuration as `first`, asked again later
    number = study.trials[-1].number
    base = [t.number for t in distinct_feasible_trials(study)]
    assert number not in base and first.number in base
    preferred = [t.number for t in distinct_feasible_trials(study, prefer=number)]
    assert number in preferred and first.number not in preferred and later.number in preferred
    assert len(preferred) == len(base)


def test_a_study_with_more_trials_than_the_cap_uses_a_stated_seeded_sample(made: dict[str, Any]) -> None:
    from gridctl.research.studies import overfitting_stats

    study = load_study(NAME, made["sd"])
    shown = made["shown"]
    n = len(distinct_feasible_trials(study)) + shown["trials_configured_rule_only"]
    a = overfitting_stats(study, made["data"], max_trials=5)
    b = overfitting_stats(study, made["data"], max_trials=5)
    assert a["trials_with_returns"] == 5 and a["trials_sampled_from"] == n
    assert a["selected_trial"] == made["shown"]["best_trial"]  # the winner is always in the sample
    kind = "feasible or configured-rule-only" if shown["trials_configured_rule_only"] else "feasible"
    assert f"a random sample of 5 of the {n} distinct {kind} trials" in " ".join(a["notes"])
    assert a == b  # seeded by the profile: the same sample every time


def test_dsr_reads_each_trial_under_the_rule_that_scored_it(tmp_path: Path, real_data: Path) -> None:
    """A strategy on `farther_first` ranked by the worst rule: a trial's value, study show's
    leaderboard and its export are another rule's, so the returns DSR and PBO deflate are that rule's
    too (they were the configured rule's: a Sharpe the study never reported)."""
    from gridctl.research import optimize as opt
    from gridctl.research.stats import BRACKET_RULES
    from gridctl.research.studies import best_config, best_trial, overfitting_stats, trial_daily_returns

    data = tmp_path / "data"  # real BTC 1h bars: the intrabar rule decides many fills there
    files = [
        str(p) for k in ("1h", "funding", "mark8h") for p in real_data.glob(f"binanceusdm_BTCUSDT_{k}_*")
    ]
    assert _cli("data", "import", *files, "--symbol", SAMPLE_SYMBOL, "--data-dir", str(data)).exit_code == 0
    base = load_strategy("default").model_dump(mode="json")
    base["backtest"]["intrabar_path"] = "farther_first"
    (tmp_path / "ff.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    tree = yaml.safe_load((PROFILES_DIR / "wide.yaml").read_text())
    tree.update(name="ff", trials=16, batch_size=8)
    tree["sampler"] = {"kind": "tpe"}  # not contenders-only: every trial runs all four rules
    tree["base"]["strategy"] = str(tmp_path / "ff.yaml")
    tree["data"].update(exchange="binanceusdm", timeframe="1h", start="2024-01-01", end="2024-03-01")
    tree["limits"].update(min_trades=1, max_path_return_spread_pct=None, max_same_bar_profit_share_pct=None)
    prof = tmp_path / "ff.profile.yaml"
    prof.write_text(yaml.safe_dump(tree, sort_keys=False))
    sd = tmp_path / "studies"
    res = _cli("optimize", "--profile", str(prof), "--data", str(data), "--studies-dir", str(sd), "--json")
    assert res.exit_code == 0, res.stderr
    study = load_study("ff", sd)
    market = load_market(data, "binanceusdm", SAMPLE_SYMBOL, "1h", "2024-01-01", "2024-03-01")
    venue = load_venue("binance_futures")

    def by_hand(number: int, path_rule: str) -> list[float]:
        cfg = best_config(study, number)
        tree = cfg.model_dump()
        tree["backtest"]["intrabar_path"] = path_rule
        eq = run_single(market, type(cfg).model_validate(tree), venue, curves=True).equity
        day = eq["ts"] // 86_400_000
        closes = [float(eq["equity"][day == d][-1]) for d in sorted(set(day.tolist()))]
        prev = [float(cfg.backtest.initial_balance), *closes[:-1]]
        return [c / p - 1 for c, p in zip(closes, prev, strict=True)]

    def scored(t: Any) -> str:
        return BRACKET_RULES[int(opt.restore_metrics(t.user_attrs[opt.ATTR]["metrics"])["path_rule_index"])]

    # a trial scored on another rule whose days that rule changes (the first one: the study is seeded)
    found = None
    for t in study.trials:
        if t.state.name == "COMPLETE" and scored(t) != "farther_first":
            hand = by_hand(t.number, scored(t))
            if hand != pytest.approx(by_hand(t.number, "farther_first"), rel=1e-6, abs=1e-9):
                found = t
                break
    assert found is not None
    rets = trial_daily_returns(study, [found.number], data)[:, 0]
    assert rets == pytest.approx(hand, rel=1e-12, abs=1e-15)
    # the winner's Sharpe in DSR is the one the leaderboard shows for it
    winner = best_trial(study)
    stored = opt.restore_metrics(winner.user_attrs[opt.ATTR]["metrics"])
    assert overfitting_stats(study, data)["sharpe_annualised"] == pytest.approx(stored["sharpe"], rel=1e-9)


def test_report_and_notebook_top_table_lists_what_study_show_lists(made: dict[str, Any]) -> None:
    """The report's (and notebook's) top table of a gridctl study: study show's metrics per trial and
    the strategy values the trial ran (`exit.tp_steps` itself, not the fraction it was drawn as)."""
    from gridctl.research.study_report import top_trials_rows

    study = load_study(NAME, made["sd"])
    header, rows = top_trials_rows(study, 5)
    board = {e["number"]: e for e in made["shown"]["leaderboard"]}
    assert header[:8] == ["trial", "composite", "sharpe", "profit_factor", "calmar (CAGR / bar-close dd)",
                          "max dd bar-close %", "total_return_pct", "trades"]  # fmt: skip
    assert "exit.tp_steps" in header and not any("@fraction" in h for h in header)
    assert rows and [r[0] for r in rows] == [e["number"] for e in made["shown"]["leaderboard"]][: len(rows)]
    keys = ["sharpe", "profit_factor", "calmar", "max_drawdown_bar_close_pct", "total_return_pct", "trades"]
    for row in rows:
        shown = board[row[0]]
        assert row[2:8] == [shown["metrics"][k] for k in keys]
        assert dict(zip(header[8:], row[8:], strict=True)) == shown["params"]


def test_study_show_fits_80_columns_with_every_name_whole(made: dict[str, Any]) -> None:
    """At COLUMNS=80 every line fits, nothing is cut to '…', and each of the 13 parameter names of the
    `wide` profile (up to 30 characters: rebalance.recenter_trigger_bps) stands whole on one line."""
    args = ["study", "show", NAME, "--studies-dir", str(made["sd"]), "--data-dir", str(made["data"])]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "80"}, catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in res.stdout
    names = list(yaml.safe_load((PROFILES_DIR / "wide.yaml").read_text())["search_space"])
    assert len(names) == 13 and "rebalance.recenter_trigger_bps" in names
    for name in names:  # a robustness row starts with the name, then ' = value' or ' (fraction) = value'
        assert any(line.startswith((f"{name} = ", f"{name} (fraction) = ")) for line in lines), name
    # every leaderboard header word is whole on some line (headers wrap between words only)
    for word in ("objective", "sharpe", "profit", "factor", "calmar", "(CAGR", "return", "trades"):
        assert any(word in line.split() for line in lines), word


def test_a_table_too_wide_for_the_terminal_continues_with_its_key_column() -> None:
    import io

    from rich.console import Console

    from gridctl.research.optimize_cli import print_table

    con = Console(width=40, file=io.StringIO(), force_terminal=False)
    columns = [("trial", True), *[(f"metric {i} (test mean)", False) for i in range(6)]]
    rows = [[str(n), *[f"-0.0{n}{i}4567" for i in range(6)]] for n in range(3)]  # 9 characters each
    print_table(con, "board", columns, rows)
    text = con.file.getvalue()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 40
    # 40 columns hold the key (5) and 3 value columns (9 each) with 3 gaps of 3: 41 > 40, so 2 per table
    assert text.count("board (continued)") == 2
    for row in rows:
        for cell in row[1:]:
            assert sum(cell in line.split() for line in lines) == 1, cell  # whole, once, never folded


def test_a_walk_forward_leaderboard_says_which_windows_each_column_averages() -> None:
    from types import SimpleNamespace

    from gridctl.research.optimize_cli import BOARD_METRICS, _leaderboard_table

    prof = SimpleNamespace(
        validation=SimpleNamespace(scheme="walk_forward"), objective=SimpleNamespace(target="in_sample")
    )
    row = {"number": 3, "values": [0.5], "objective_in_sample": 0.5, "objective_out_of_sample": 0.2}
    out = {"leaderboard": [{**row, "metrics": dict.fromkeys(BOARD_METRICS, 1.0)}]}
    title, columns, rows = _leaderboard_table(out, prof, False, 0)
    headers = [h for h, _whole in columns]
    assert headers[:3] == ["trial", "objective (train mean)", "objective (test mean)"]
    assert all(h.endswith("(test mean)") for h in headers[3:]) and len(headers) == 3 + len(BOARD_METRICS)
    assert title.endswith("ranked by the objective's train mean") and rows[0][:3] == ["3", "0.5", "0.2"]


def test_a_walk_forward_metric_undefined_in_every_window_is_nan_without_a_warning() -> None:
    """A configuration that never traded in any test window has no Sharpe ratio or profit factor
    there (stored as null): its leaderboard metric is NaN, said in ``trial_metrics``'s docstring,
    never numpy's "Mean of empty slice"; a window where a metric is infinite is left out too."""
    import warnings

    import optuna

    from gridctl.research.optimize import ATTR
    from gridctl.research.studies import trial_metrics

    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    folds = [
        {"sharpe": None, "profit_factor": None, "trades": 0.0, "calmar": "inf"},
        {"sharpe": None, "profit_factor": None, "trades": 0.0, "calmar": 2.0},
    ]
    trial = optuna.trial.create_trial(
        params={"x": 0.5},
        distributions=dist,
        value=0.1,
        user_attrs={ATTR: {"in_sample": [{"sharpe": 1.0}], "out_of_sample": folds}},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = trial_metrics(trial)
    assert math.isnan(got["sharpe"]) and math.isnan(got["profit_factor"])
    assert got["trades"] == 0.0 and got["calmar"] == 2.0  # the infinite window is not averaged in
