"""Hostile profile inputs: every class is refused at load with the file and the field named, exit code 2,
and no study journal is created (nothing half-written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from gridctl.cli import app
from gridctl.configs.errors import GridctlError
from gridctl.data.sample import write_sample
from gridctl.research.profiles import PROFILES_DIR, load_profile


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("profdata")
    write_sample(path, days=4)
    return path


def _profile(tmp_path: Path, edit: Any) -> Path:
    tree = yaml.safe_load((PROFILES_DIR / "wide.yaml").read_text())
    tree["name"] = "hostile"
    tree["trials"] = 4
    tree["batch_size"] = 4
    edit(tree)
    path = tmp_path / "hostile.yaml"
    # yaml.safe_dump writes .nan / .inf for float NaN and infinity, as a user would
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _space(key: str, spec: Any) -> Any:
    def edit(tree: dict[str, Any]) -> None:
        tree["search_space"][key] = spec

    return edit


def _set(section: str, key: str, value: Any) -> Any:
    def edit(tree: dict[str, Any]) -> None:
        tree[section][key] = value

    return edit


def _set_top(key: str, value: Any) -> Any:
    def edit(tree: dict[str, Any]) -> None:
        tree[key] = value

    return edit


def _composite(part: str, metric: str, value: Any) -> Any:
    def edit(tree: dict[str, Any]) -> None:
        tree["objective"]["composite"][part][metric] = value

    return edit


def _seed(value: Any) -> Any:
    def edit(tree: dict[str, Any]) -> None:
        tree["seed"] = value

    return edit


CASES = {
    # (edit, the field path the message must name, a phrase of the reason)
    "tunes the intrabar path rule": (
        _space(
            "backtest.intrabar_path", {"type": "categorical", "choices": ["nearer_first", "farther_first"]}
        ),
        "search_space.backtest.intrabar_path",
        "not a parameter",
    ),
    "NaN composite weight": (_composite("weights", "sharpe", float("nan")), "objective.composite", "finite"),
    "NaN composite bound": (
        _composite("bounds", "calmar", [float("nan"), 5]),
        "objective.composite",
        "finite",
    ),
    "infinite composite bound": (
        _composite("bounds", "sharpe", [-1, float("inf")]),
        "objective.composite",
        "finite",
    ),
    "list as a categorical choice": (
        _space(
            "policy.strategy", {"type": "categorical", "choices": [["throttled-counter"], "core-and-scalp"]}
        ),
        "search_space.policy.strategy",
        "each choice",
    ),
    "high: .inf": (
        _space("grid.grid_step_bps", {"type": "float", "low": 10, "high": float("inf"), "log": True}),
        "search_space.grid.grid_step_bps",
        "finite",
    ),
    "NaN low": (
        _space("grid.qty_scale", {"type": "float", "low": float("nan"), "high": 1.5}),
        "search_space.grid.qty_scale",
        "finite",
    ),
    "seed 2**32": (_seed(2**32), "seed", "less than"),
    "negative seed": (_seed(-1), "seed", "greater than"),
    "seed true": (_seed(True), "seed", "integer"),
    "step that does not fit the range": (
        _space("grid.qty_scale", {"type": "float", "low": 0.8, "high": 1.5, "step": 0.3}),
        "search_space.grid.qty_scale",
        "whole number of steps",
    ),
    "step wider than the range": (
        _space("policy.counter_levels", {"type": "int", "low": 0, "high": 3, "step": 5}),
        "search_space.policy.counter_levels",
        "whole number of steps",
    ),
    "switch drawn as a float": (
        _space("execution.maker_only", {"type": "float", "low": 0, "high": 1}),
        "search_space.execution.maker_only",
        "switch",
    ),
    "switch drawn from numbers": (
        _space("backtest.fill_on_touch", {"type": "categorical", "choices": [0, 1]}),
        "search_space.backtest.fill_on_touch",
        "switch",
    ),
    "named choice not in the field's names": (
        _space("policy.strategy", {"type": "categorical", "choices": ["throttled-counter", "martingale"]}),
        "search_space.policy.strategy",
        "martingale",
    ),
    "named field drawn as a number": (
        _space("policy.strategy", {"type": "int", "low": 0, "high": 1}),
        "search_space.policy.strategy",
        "named choice",
    ),
    "fractional choice for an int field": (
        _space("grid.grid_levels_long", {"type": "categorical", "choices": [2, 3.5]}),
        "search_space.grid.grid_levels_long",
        "not int values",
    ),
    "int field drawn as float": (
        _space("grid.grid_levels_long", {"type": "float", "low": 2, "high": 20}),
        "search_space.grid.grid_levels_long",
        "type int",
    ),
    "same-bar share limit above 100": (
        _set("limits", "max_same_bar_profit_share_pct", 150),
        "limits.max_same_bar_profit_share_pct",
        "less than or equal to 100",
    ),
    "every composite weight 0": (
        lambda tree: tree["objective"]["composite"].update(
            weights={m: 0 for m in tree["objective"]["composite"]["weights"]}
        ),
        "objective.composite",
        "weights are all 0",
    ),
    "trials 10**12": (_set_top("trials", 10**12), "trials", "less than or equal to 1000000"),
    "trials 1,000,001": (_set_top("trials", 1_000_001), "trials", "less than or equal to 1000000"),
    "NaN spread limit": (
        _set("limits", "max_path_return_spread_pct", float("nan")),
        "limits.max_path_return_spread_pct",
        "finite",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_profile_is_refused_at_load_naming_file_and_field(case: str, tmp_path: Path) -> None:
    edit, field, reason = CASES[case]
    path = _profile(tmp_path, edit)
    with pytest.raises(GridctlError) as err:
        load_profile(path)
    msg = str(err.value)
    assert str(path) in msg, msg
    assert field in msg, msg
    assert reason in msg, msg


ONE_PROBLEM = ["tunes the intrabar path rule", "switch drawn as a float", "switch drawn from numbers"]


@pytest.mark.parametrize("case", ONE_PROBLEM)
def test_a_single_profile_problem_is_one_line(case: str, tmp_path: Path) -> None:
    """A search-space problem printed "1 problem(s)" and the problem on a second line."""
    edit, field, reason = CASES[case]
    path = _profile(tmp_path, edit)
    with pytest.raises(GridctlError) as err:
        load_profile(path)
    assert str(err.value).startswith(f"invalid profile {path}: {field}: ")
    assert "\n" not in str(err.value) and reason in str(err.value)


@pytest.mark.parametrize("case", ["NaN composite weight", "list as a categorical choice", "seed 2**32"])
def test_cli_exits_2_and_leaves_no_journal(case: str, tmp_path: Path, data_dir: Path) -> None:
    path = _profile(tmp_path, CASES[case][0])
    studies = tmp_path / "studies"
    res = CliRunner().invoke(
        app,
        ["optimize", "--profile", str(path), "--data", str(data_dir), "--studies-dir", str(studies)],
        catch_exceptions=False,
    )
    assert res.exit_code == 2, res.stdout + res.stderr
    assert str(path) in res.stderr and "Traceback" not in res.stderr
    assert not studies.exists() or not any(studies.iterdir())


def test_min_trades_no_run_can_reach_is_refused_before_any_journal(tmp_path: Path, data_dir: Path) -> None:
    # 4 days of 1m bars: 5,760 bars; no run closes 10**9 lots in them, whatever its parameters
    path = _profile(tmp_path, _set("limits", "min_trades", 10**9))
    studies = tmp_path / "studies"
    res = CliRunner().invoke(
        app,
        ["optimize", "--profile", str(path), "--data", str(data_dir), "--studies-dir", str(studies)],
        catch_exceptions=False,
    )
    assert res.exit_code == 2, res.stdout + res.stderr
    assert "limits.min_trades" in res.stderr and "can never hold" in res.stderr
    assert not studies.exists() or not any(studies.iterdir())


def test_every_shipped_profile_still_loads() -> None:
    for name in ("wide", "narrow", "fine", "pareto"):
        assert load_profile(name).name == name


def test_a_failure_while_creating_the_study_leaves_no_empty_journal(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gridctl.research import optimize as opt

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise GridctlError("refused while creating the study")

    prof = load_profile(_profile(tmp_path, lambda tree: None))
    work = opt.load_workload(prof, data_dir)
    monkeypatch.setattr(opt.loop, "create_or_load_study", refuse)
    studies = tmp_path / "studies"
    with pytest.raises(GridctlError, match="refused while creating"):
        opt.optimize(prof, "fresh", studies_dir=studies, work=work)
    assert not (studies / "fresh.journal").exists()
    # a journal that was there before the call is never removed, even an empty one
    (studies / "kept.journal").write_bytes(b"")
    with pytest.raises(GridctlError, match="refused while creating"):
        opt.optimize(prof, "kept", studies_dir=studies, work=work)
    assert (studies / "kept.journal").exists()


def test_a_batch_whose_every_value_optuna_refuses_stops_the_loop(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import warnings

    from gridctl.research import optimize as opt

    prof = load_profile(_profile(tmp_path, lambda tree: None))
    work = opt.load_workload(prof, data_dir)

    def nan_values(work: Any, overrides: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [opt.Evaluation((float("nan"),), [-1.0] * 5, {"overrides": dict(o)}) for o in overrides]

    monkeypatch.setattr(opt.loop, "evaluate", nan_values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna warns about each refused value
        with pytest.raises(GridctlError, match="refused every trial of a batch"):
            opt.optimize(prof, "nan", studies_dir=tmp_path / "s", work=work)
    study = optuna.load_study(study_name="nan", storage=opt.open_storage("nan", None, tmp_path / "s"))
    assert len(study.trials) == prof.batch_size  # one batch, not an endless loop


@pytest.mark.parametrize(
    ("given", "holds"),
    [
        ("strategies/default.yaml", "a strategy config"),
        ("venues/binance_futures.yaml", "a venue config"),
        ("venues/symbols/binance_usdm.yaml", "a symbol-rules snapshot"),
    ],
)
def test_a_config_given_as_the_profile_is_one_line_saying_what_it_is(given: str, holds: str) -> None:
    path = PROFILES_DIR.parent / given
    with pytest.raises(GridctlError) as info:
        load_profile(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path} is {holds} (sections "), message
    assert "not an optimization profile" in message


def test_the_profile_marks_are_profile_sections_of_no_config() -> None:
    """configs/ names a profile by these sections without importing research's Profile model."""
    from gridctl.configs.loader import PROFILE_SECTIONS
    from gridctl.configs.schema import StrategyConfig, VenueConfig
    from gridctl.research.profiles import Profile

    assert set(PROFILE_SECTIONS) <= set(Profile.model_fields)
    assert not set(PROFILE_SECTIONS) & (set(StrategyConfig.model_fields) | set(VenueConfig.model_fields))


# wide's base: the default strategy (rung 1 of 150 USDT) on binance_futures (leverage 10): 15 USDT margin;
# qty_scale is kept >= 1 so rung 1 is the cheapest (wide's 0.8 would make rung 2 of 120 USDT placeable).
@pytest.mark.parametrize(
    ("space", "refused"),
    [
        ({"backtest.initial_balance": (0.001, 10.0)}, True),
        ({"backtest.initial_balance": (1.0, 14.9)}, True),
        ({"backtest.initial_balance": (0.001, 15.0)}, False),  # the high corners can trade
        ({"backtest.initial_balance": (14.99, 14.999)}, True),
        ({"backtest.initial_balance": (15.0, 1e6)}, False),
    ],
)
def test_a_space_no_corner_of_which_can_margin_an_order_is_refused(
    tmp_path: Path, space: dict[str, tuple[float, float]], refused: bool
) -> None:
    """A balance range of 0.001..10 ran every trial without a fill (exit 0, no best trial)."""

    def edit(tree: dict[str, Any]) -> None:
        for key, (low, high) in space.items():
            tree["search_space"][key] = {"type": "float", "low": low, "high": high}
        tree["search_space"]["grid.qty_scale"] = {"type": "float", "low": 1.0, "high": 1.5, "step": 0.05}

    path = _profile(tmp_path, edit)
    if not refused:
        load_profile(path)
        return
    with pytest.raises(GridctlError) as err:
        load_profile(path)
    message = str(err.value)
    assert message.startswith(f"invalid profile {path}: no corner of search_space can trade; at ")
    assert "backtest.initial_balance" in message and "cannot margin one order" in message
    assert "\n" not in message


@pytest.mark.parametrize(("balance", "refused"), [(13.0, False), (11.99, True)])
def test_the_margin_check_takes_the_cheapest_rung_when_later_rungs_shrink(
    balance: float, refused: bool
) -> None:
    """qty_scale 0.8 makes rungs of 150, 120, 96, ... USDT; 96 is below BTC's 100 USDT min notional and
    never placed, so the cheapest placeable rung is 120: 12 USDT of margin at leverage 10 (rung 1
    alone would need 15)."""
    from gridctl.configs.crosscheck import notional_margin_problem
    from gridctl.configs.loader import load_strategy, load_venue

    data = load_strategy("default").model_dump()
    data["grid"]["qty_scale"] = 0.8
    data["backtest"]["initial_balance"] = balance
    strategy = type(load_strategy("default")).model_validate(data)
    problem = notional_margin_problem(strategy, load_venue("binance_futures"))
    assert (problem is not None) == refused, problem
    if refused:
        assert "cheapest rung is 120 USDT" in problem and "= 12 USDT of margin" in problem
