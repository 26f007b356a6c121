"""Optimization profiles: one typed YAML per search (``configs/profiles/*.yaml``), loaded strictly.

A profile names the base strategy and venue, the data window, the search space, the sampler and
pruner, the objective, the hard limits, the validation scheme and the seed. It goes through the same
strict machinery as strategy configs: unknown keys are errors naming the profile file, the key path
and the closest valid key; a search-space key must be a tunable strategy field (``grid.grid_step_bps``)
and a misspelled one names the nearest valid field.

Constraints between parameters are enforced by how values are drawn, never by failing trials: a
parameter may be drawn as a *fraction* of an earlier one (``regime.ema_fast`` as 0.1-0.8 of
``regime.ema_slow``; ``exit.tp_steps`` as up to 1.0 of ``3 * exit.sl_steps``), so every draw is a valid
strategy. :func:`load_profile` also checks the corners of the space against the strategy schema, so
a range the schema would refuse fails when the profile loads, not in trial 517.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gridctl import configs
from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import _format_errors, check_kind, read_yaml
from gridctl.research.options import RANGES
from gridctl.research.space import corner_draws, field_of, resolve_draw, tunable_fields

PROFILES_DIR = Path(configs.__file__).resolve().parent / "profiles"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpec(_Strict):
    """One search dimension.

    ``type`` int/float draw from ``low..high`` (``step`` for a grid, ``log`` for a log scale);
    ``categorical`` draws from ``choices``. With ``fraction_of``, the drawn number is a fraction in
    ``low..high`` (within 0..1] of ``scale * <other parameter>`` and the strategy value is
    ``round(fraction * scale * other)`` (ints) clamped to ``min_value`` / ``other - gap`` as needed.
    """

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = Field(default=None, gt=0)
    log: bool = False
    choices: list[Any] | None = None
    fraction_of: str | None = None
    scale: float = Field(default=1.0, gt=0)
    gap: float = Field(default=0.0, ge=0)
    min_value: float | None = None
    #: Basket profiles: draw one value per basket symbol (``load_profile`` turns the entry into one
    #: ``symbol_overrides.<SYMBOL>.<key>`` entry per symbol); false: one value shared by every symbol.
    per_symbol: bool = False

    @model_validator(mode="after")
    def _coherent(self) -> ParamSpec:
        for name in ("low", "high", "step", "scale", "gap", "min_value"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"'{name}' must be a finite number (got {value})")
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            if any(v is not None for v in (self.low, self.high, self.step, self.fraction_of)) or self.log:
                raise ValueError("a categorical parameter takes only 'choices'")
            for choice in self.choices:
                if not isinstance(choice, str | int | float) or (
                    isinstance(choice, float) and not math.isfinite(choice)
                ):
                    raise ValueError(
                        f"each choice must be one finite number, true/false or a name (got {choice!r})"
                    )
            if len({(type(c), c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"'choices' lists a value twice ({self.choices})")
            return self
        if self.choices is not None:
            raise ValueError(f"'choices' is only for type categorical (this one is {self.type})")
        if self.low is None or self.high is None:
            raise ValueError("needs both 'low' and 'high'")
        if self.low >= self.high:
            raise ValueError(f"'low' ({self.low}) must be below 'high' ({self.high})")
        if self.log and self.step is not None:
            raise ValueError("'log' and 'step' cannot be combined (Optuna refuses it)")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale parameter needs low > 0")
        if self.fraction_of is not None and not (self.low > 0 and self.high <= 1):
            raise ValueError("a fraction_of parameter draws a fraction: 0 < low < high <= 1")
        if self.type == "int" and self.fraction_of is None:
            if self.low != int(self.low) or self.high != int(self.high):
                raise ValueError("an int parameter needs whole-number low/high")
            if self.step is not None and self.step != int(self.step):
                raise ValueError("an int parameter needs a whole-number step")
        if self.step is not None:
            # Optuna silently shrinks a range whose width is not a whole number of steps
            steps = (self.high - self.low) / self.step
            if steps < 1 - 1e-9 or abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
                raise ValueError(
                    f"'step' {self.step:g} does not fit the range {self.low:g}..{self.high:g} "
                    "(high - low must be a whole number of steps)"
                )
        return self

    def neighbour_step(self) -> float:
        """How far 'one step' moves this parameter's drawn value (robustness table)."""
        if self.step is not None:
            return float(self.step)
        if self.type == "int" and self.fraction_of is None:
            return 1.0
        assert self.low is not None and self.high is not None
        if self.log:
            return (math.log(self.high) - math.log(self.low)) / 20.0  # in log space
        return (self.high - self.low) / 20.0


class SamplerSpec(_Strict):
    """Which Optuna sampler draws the trials, and its options.

    ``random``: independent uniform draws. ``qmc``: a scrambled Sobol sequence (quasi-random, covers
    the space more evenly than random draws; needs scipy); the sequence position is stored on the
    study, so a resumed study continues it instead of redrawing points (each worker of a shared
    study draws its own sequence). ``tpe``
    (``n_startup_trials``, ``multivariate``) models the good trials; ``nsga2`` (``population_size``)
    keeps a Pareto front. An option the chosen kind does not read is an error.
    """

    kind: Literal["random", "qmc", "tpe", "nsga2"]
    n_startup_trials: int | None = Field(default=None, ge=1)
    population_size: int | None = Field(default=None, ge=2)
    multivariate: bool = False

    @model_validator(mode="after")
    def _options_read(self) -> SamplerSpec:
        reads = {"random": set(), "qmc": set(), "tpe": {"n_startup_trials", "multivariate"}}
        reads["nsga2"] = {"population_size"}
        given = {
            name
            for name in ("n_startup_trials", "population_size", "multivariate")
            if getattr(self, name) not in (None, False)
        }
        unread = sorted(given - reads[self.kind])
        if unread:
            raise ValueError(f"sampler kind {self.kind} does not read {', '.join(unread)}")
        return self


class PrunerSpec(_Strict):
    """Optional pruner: stops a trial after a walk-forward fold scores below the median of others."""

    kind: Literal["none", "median"] = "none"
    n_startup_trials: int = Field(default=16, ge=0)
    n_warmup_steps: int = Field(default=0, ge=0)


class CompositeSpec(_Strict):
    """The audited bot's composite score: weighted min-max normalised metrics with FIXED bounds."""

    weights: dict[Literal["sharpe", "profit_factor", "calmar", "drawdown"], float]
    bounds: dict[Literal["sharpe", "profit_factor", "calmar", "drawdown"], tuple[float, float]]

    @model_validator(mode="after")
    def _same_keys(self) -> CompositeSpec:
        if set(self.weights) != set(self.bounds):
            raise ValueError("composite weights and bounds must name the same metrics")
        for key, weight in self.weights.items():
            if not math.isfinite(weight):
                raise ValueError(f"composite weight of {key} must be a finite number (got {weight})")
        for key, (lo, hi) in self.bounds.items():
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"composite bounds for {key} must be finite numbers (got [{lo}, {hi}])")
            if lo >= hi:
                raise ValueError(f"composite bounds for {key}: low {lo} must be below high {hi}")
        if not any(self.weights.values()):
            raise ValueError("composite weights are all 0: every trial would score 0 and nothing be ranked")
        return self


class ObjectiveSpec(_Strict):
    """What a trial scores: ``composite``, one metric, or ``return_drawdown`` (two objectives)."""

    kind: Literal["composite", "sharpe", "calmar", "total_return", "return_drawdown"]
    composite: CompositeSpec | None = None
    target: Literal["in_sample", "out_of_sample"] = "in_sample"
    rank_by: Literal["value", "worst_neighbour"] = "value"
    rank_top_k: int = Field(default=8, ge=1, le=64)
    #: ``worst``: each scored window runs under every intrabar path rule (research.stats.BRACKET_RULES)
    #: and the trial is scored on the rule that gives it the lowest (first) objective, so no ranking
    #: can reward a flattering fill model; ``configured``: scored on the base strategy's rule (the
    #: other rules still run: every trial records its spread across them).
    path_rule: Literal["worst", "configured"] = "worst"

    @model_validator(mode="after")
    def _composite_given(self) -> ObjectiveSpec:
        if self.kind == "composite" and self.composite is None:
            raise ValueError("objective kind composite needs a 'composite' section (weights and bounds)")
        if self.kind != "composite" and self.composite is not None:
            raise ValueError(f"a 'composite' section is only read for kind composite (kind is {self.kind})")
        if self.kind == "return_drawdown" and self.rank_by != "value":
            raise ValueError("rank_by worst_neighbour needs a single objective")
        return self

    @property
    def directions(self) -> list[str]:
        """Optuna study directions."""
        return ["maximize", "minimize"] if self.kind == "return_drawdown" else ["maximize"]


class LimitsSpec(_Strict):
    """Hard limits, passed to Optuna as constraints (a trial breaking one is infeasible, not best)."""

    min_trades: int = Field(default=0, ge=0)
    #: Worst bar-close equity drawdown in percent (the batch summary's ``max_drawdown_bar_close_pct``).
    max_drawdown_bar_close_pct: float = Field(default=100.0, gt=0, le=100)
    allow_liquidation: bool = False
    #: Worst bar-close drawdown over every intrabar path rule (research.stats.path_bracket's worst side;
    #: each trial re-runs under the other rules). None: not limited.
    max_worst_path_drawdown_pct: float | None = Field(default=None, gt=0, le=100)
    #: Largest spread of total return (percentage points, best rule minus worst) over the intrabar path
    #: rules in any scored window. None: not limited.
    max_path_return_spread_pct: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    #: Largest share (percent) of gross profit from same-bar round trips (lots whose entry and TP/SL
    #: filled in one bar, so the path rule decided them), the highest over the rules run. None: not limited.
    max_same_bar_profit_share_pct: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)


class DataSpec(_Strict):
    """Which stored market the study runs on; ``start``/``end`` are YYYY-MM-DD (UTC, end exclusive).

    ``symbols``: a basket (ccxt symbols, in step order) traded in one wallet: the base strategy's own
    basket or part of it (the strategy's ``symbol_overrides`` of the symbols named are kept), or a
    basket for a single-symbol strategy. Without it, a strategy with ``strategy.symbols`` runs its
    whole basket and any other strategy its ``symbol`` (default: the strategy's instrument).
    """

    exchange: str = "sample"
    symbol: str | None = None
    symbols: list[str] | None = Field(default=None, min_length=1)
    timeframe: str = "1m"
    start: str | None = None
    end: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> DataSpec:
        if self.symbol is not None and self.symbols is not None:
            raise ValueError("give either 'symbol' (one market) or 'symbols' (a basket), not both")
        if self.symbols is not None:
            twice = sorted({s for s in self.symbols if self.symbols.count(s) > 1})
            if twice:
                raise ValueError(f"'symbols' lists {twice} more than once")
        return self


class ValidationSpec(_Strict):
    """``none`` scores the whole window; ``walk_forward`` scores rolling or anchored train/test folds."""

    scheme: Literal["none", "walk_forward"] = "none"
    mode: Literal["rolling", "anchored"] = "rolling"
    train_days: int | None = Field(default=None, ge=1)
    test_days: int | None = Field(default=None, ge=1)
    step_days: int | None = Field(default=None, ge=1)
    #: Days left out between each train window and its test window (walk_forward only).
    purge_days: int = Field(default=0, ge=0)
    #: The last days of the data window, never scored by any trial nor used to select one; ``study
    #: show`` reports the winner on them apart. None: no hold-out.
    holdout_days: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _windows(self) -> ValidationSpec:
        given = [self.train_days, self.test_days, self.step_days]
        if self.scheme == "walk_forward" and any(v is None for v in given):
            raise ValueError("walk_forward needs train_days, test_days and step_days")
        if self.scheme == "none" and (any(v is not None for v in given) or self.purge_days):
            raise ValueError("train_days, test_days, step_days, purge_days are read with walk_forward only")
        if self.scheme == "walk_forward" and self.step_days < self.test_days:  # type: ignore[operator]
            raise ValueError(
                f"step_days ({self.step_days}) below test_days ({self.test_days}) would make test windows "
                "overlap (each test day must be out of sample once)"
            )
        return self


class BaseSpec(_Strict):
    """The strategy and venue every trial starts from (names or YAML paths)."""

    strategy: str = "default"
    venue: str = "binance_futures"


class Profile(_Strict):
    """A whole optimization profile (see configs/profiles/wide.yaml for a documented example)."""

    name: str = Field(min_length=1)
    description: str = ""
    base: BaseSpec = Field(default_factory=BaseSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    search_space: dict[str, ParamSpec]
    #: As many as --trials takes (a profile's 10**12 ran an endless study).
    trials: int = Field(ge=1, le=RANGES["trials"][2])
    batch_size: int = Field(default=64, ge=1, le=4096)
    sampler: SamplerSpec
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    objective: ObjectiveSpec
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    #: Seeds the samplers (numpy and scipy take 0 .. 2**32 - 1).
    seed: int = Field(default=0, ge=0, lt=2**32, strict=True)

    @field_validator("search_space")
    @classmethod
    def _non_empty(cls, value: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        if not value:
            raise ValueError("needs at least one parameter")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if self.objective.kind == "return_drawdown" and self.sampler.kind == "tpe":
            raise ValueError("objective return_drawdown (two objectives) needs sampler nsga2, random or qmc")
        if self.objective.kind != "return_drawdown" and self.sampler.kind == "nsga2":
            raise ValueError("sampler nsga2 is for objective return_drawdown (a Pareto front)")
        if self.pruner.kind != "none" and self.validation.scheme != "walk_forward":
            raise ValueError("a pruner needs walk_forward validation (folds are its intermediate steps)")
        if self.objective.target == "out_of_sample" and self.validation.scheme != "walk_forward":
            raise ValueError("objective target out_of_sample needs validation scheme walk_forward")
        return self

    def fingerprint(self) -> str:
        """Stable hash of everything that defines the study (trial count excluded: it may grow)."""
        data = self.model_dump(mode="json", exclude={"trials", "description"})
        # fields added with baskets count only when set (a study made before them keeps its fingerprint)
        if data["data"]["symbols"] is None:
            del data["data"]["symbols"]
        for spec in data["search_space"].values():
            if not spec["per_symbol"]:
                del spec["per_symbol"]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def ordered_params(self) -> list[str]:
        """Search-space keys in draw order: a fraction_of parameter after the one it depends on."""
        for key, spec in self.search_space.items():
            if spec.per_symbol:  # fail closed: drawn as one shared value it would be silently wrong
                raise GridctlError(
                    f"profile {self.name}: search_space.{key}: per_symbol is expanded by load_profile "
                    "(one entry per basket symbol); load the profile with it"
                )
        done: list[str] = []
        pending = list(self.search_space)
        while pending:
            for key in pending:
                dep = self.search_space[key].fraction_of
                if dep is None or dep in done:
                    done.append(key)
                    pending.remove(key)
                    break
            else:  # pragma: no cover - guarded by _check_space (cycles are rejected at load)
                raise GridctlError(f"search_space: circular fraction_of among {pending}")
        return done


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped in configs/profiles."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def resolve_profile(path_or_name: str | Path) -> Path:
    """An existing YAML path as given, else ``configs/profiles/<name>.yaml``; anything else is an error."""
    candidate = Path(path_or_name).expanduser()
    if candidate.is_file():
        return candidate
    text = str(path_or_name)
    if "/" in text or text.endswith((".yaml", ".yml")):
        raise GridctlError(f"profile file not found: {text}")
    shipped = PROFILES_DIR / f"{text}.yaml"
    if shipped.is_file():
        return shipped
    raise GridctlError(
        f"no profile named {text!r}; shipped profiles: {', '.join(shipped_profiles())} (or give a YAML path)"
    )


#: Profile keys that were renamed: old dotted path -> new key (a profile using the old one is refused
#: with the new name, never silently read).
RENAMED_KEYS = {
    "limits.max_drawdown_pct": "max_drawdown_bar_close_pct",
}


def _renamed_problems(tree: Any) -> list[str]:
    problems = []
    for old, new in RENAMED_KEYS.items():
        section, _, key = old.rpartition(".")
        node = tree.get(section) if isinstance(tree, dict) else None
        if isinstance(node, dict) and key in node:
            problems.append(
                f"  {old}: renamed; use {section}.{new} (gridctl names its drawdowns "
                "max_drawdown_bar_close_pct, max_drawdown_daily_close_pct, max_drawdown_intrabar_pct)"
            )
    return problems


def migrate_profile_tree(tree: dict[str, Any]) -> dict[str, Any]:
    """A profile tree stored by an older gridctl, with renamed keys moved to their new names."""
    out = json.loads(json.dumps(tree))
    for old, new in RENAMED_KEYS.items():
        section, _, key = old.rpartition(".")
        node = out.get(section)
        if isinstance(node, dict) and key in node and new not in node:
            node[new] = node.pop(key)
    return out


def _problems_message(where: str, problems: list[str]) -> str:
    """One line for one problem (``invalid profile F: search_space.X: ...``); a count and one indented
    line per problem for several."""
    if len(problems) == 1:
        return f"invalid profile {where}: {problems[0].strip()}"
    return f"invalid profile {where}: {len(problems)} problems\n" + "\n".join(problems)


def load_profile(path_or_name: str | Path) -> Profile:
    """Load and check a profile by name (``wide``) or path; every problem names the file and key."""
    path = resolve_profile(path_or_name)
    tree = read_yaml(path)
    check_kind(tree, "optimization profile", str(path))
    renamed = _renamed_problems(tree)
    if renamed:
        raise GridctlError(_problems_message(str(path), renamed))
    try:
        profile = Profile.model_validate(tree)
    except ValidationError as err:
        raise GridctlError(_format_errors(err, "profile", Profile, str(path), {}, set())) from None  # type: ignore[arg-type]
    strategy = profile_strategy(profile, str(path))
    profile = _expand_per_symbol(profile, strategy, str(path))
    _check_space(profile, str(path), strategy)
    _check_selection(profile, str(path))
    return profile


def profile_strategy(profile: Profile, where: str | None = None) -> Any:
    """The strategy every trial starts from: ``base.strategy``, trading the basket ``data.symbols``
    when the profile names one (the strategy's overrides of the symbols left out are dropped), or the
    one symbol ``data.symbol`` (its ``instrument_id`` set to it, as ``gridctl backtest --symbol`` does)."""
    from gridctl.configs.loader import load_strategy, refuse_inert_symbol_overrides, retarget_strategy

    where = where or f"profile {profile.name}"
    strategy = load_strategy(profile.base.strategy)
    data = profile.data
    if data.symbols is None:
        if data.symbol is not None and strategy.strategy.symbols is not None:
            raise GridctlError(
                f"invalid profile {where}: data.symbol: {data.symbol} with the basket strategy "
                f"{profile.base.strategy} ({list(strategy.basket_symbols)}); name the basket in data.symbols"
            )
        try:  # as `gridctl backtest --symbol`: the strategy trades the profile's symbol
            one = retarget_strategy(profile.base.strategy, strategy, data.symbol)
        except GridctlError as err:
            raise GridctlError(f"invalid profile {where}: data.symbol: {err}") from None
        refuse_inert_symbol_overrides(one)
        return one
    from gridctl.configs.overrides import basket_overrides

    try:
        return load_strategy(profile.base.strategy, basket_overrides(strategy, tuple(data.symbols)))
    except GridctlError as err:
        raise GridctlError(f"invalid profile {where}: data.symbols: {err}") from None


def profile_basket(strategy: Any) -> tuple[str, ...] | None:
    """The basket a profile's strategy (``profile_strategy``) trades, None for one symbol."""
    return strategy.basket_symbols if strategy.strategy.symbols is not None else None


def _expand_per_symbol(profile: Profile, strategy: Any, where: str) -> Profile:
    """``profile`` with each ``per_symbol`` entry replaced by one ``symbol_overrides.<SYMBOL>.<key>``
    entry per basket symbol (in basket order); a per-symbol entry's ``fraction_of`` a per-symbol entry
    becomes that symbol's own entry."""
    per = [key for key, spec in profile.search_space.items() if spec.per_symbol]
    if not per:
        return profile
    basket = profile_basket(strategy)
    for key in per:
        if basket is None:
            raise GridctlError(
                f"invalid profile {where}: search_space.{key}: per_symbol needs a basket "
                "(data.symbols, or a strategy with strategy.symbols); this study trades one symbol"
            )
        if key.startswith("symbol_overrides."):
            raise GridctlError(
                f"invalid profile {where}: search_space.{key}: per_symbol is for a strategy field "
                "(section.key), this entry already names a symbol"
            )
    assert basket is not None
    for key in per:  # one symbol's parameter drawn twice (two ranges): refused, never one silently dropped
        for sym in basket:
            name = f"symbol_overrides.{sym}.{key}"
            if name in profile.search_space:
                raise GridctlError(
                    f"invalid profile {where}: search_space.{name}: drawn twice, by its own entry and by "
                    f"{key!r} (per_symbol: true); keep one"
                )
    space: dict[str, ParamSpec] = {}
    for key, spec in profile.search_space.items():
        parent = spec.fraction_of
        if not spec.per_symbol:
            if parent is not None and parent in per:
                raise GridctlError(
                    f"invalid profile {where}: search_space.{key}: fraction_of {parent!r}, which is drawn "
                    "per symbol; draw this one per symbol too"
                )
            space[key] = spec
            continue
        for sym in basket:
            own = parent if parent is None or parent not in per else f"symbol_overrides.{sym}.{parent}"
            space[f"symbol_overrides.{sym}.{key}"] = spec.model_copy(
                update={"per_symbol": False, "fraction_of": own}
            )
    return profile.model_copy(update={"search_space": space})


def _check_selection(profile: Profile, where: str) -> None:
    """Refuse profiles whose selection would see the data it reports as out of sample."""
    problems = []
    if profile.validation.scheme == "walk_forward":
        if profile.objective.target == "out_of_sample":
            problems.append(
                "  objective.target: out_of_sample would select on the test windows walk-forward reports "
                "as out of sample; use in_sample (each fold selects on its own train window)"
            )
        if profile.sampler.kind in ("tpe", "nsga2"):
            problems.append(
                f"  sampler.kind: {profile.sampler.kind} learns from told values, which span every fold's "
                "train window (and so earlier folds' test windows); walk_forward needs random or qmc"
            )
    if problems:
        raise GridctlError(_problems_message(where, problems))


#: Strategy fields a search space may not tune, and why.
NOT_TUNABLE = {
    "backtest.intrabar_path": "the intrabar path rule is not a parameter (a study could select the "
    "flattering fill rule); the optimizer ranks every trial on its worst rule (objective.path_rule)",
}


def _literal_values(annotation: Any) -> tuple[Any, ...]:
    """The values a ``Literal[...]`` (or ``Literal[...] | None``) annotation admits."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    out: tuple[Any, ...] = ()
    for arg in typing.get_args(annotation):
        out += (None,) if arg is type(None) else _literal_values(arg)
    return out


def _kind_problem(spec: ParamSpec, info: Any) -> str | None:
    """Why ``spec`` cannot draw values of the field ``info`` describes (None: it can)."""
    annotation = info.annotation
    if annotation is bool:
        if spec.type != "categorical" or not all(isinstance(c, bool) for c in spec.choices or ()):
            return "a switch (true/false): draw it as type categorical with choices [true, false]"
        return None
    if "Literal" in str(annotation):
        allowed = _literal_values(annotation)
        if spec.type != "categorical":
            return f"a named choice: draw it as type categorical with choices from {list(allowed)}"
        bad = [c for c in spec.choices or () if c not in allowed or isinstance(c, bool)]
        return f"choices {bad} are not among {list(allowed)}" if bad else None
    if spec.type == "categorical":
        numeric = (int,) if annotation is int else (int, float)
        bad = [c for c in spec.choices or () if isinstance(c, bool) or not isinstance(c, numeric)]
        return f"choices {bad} are not {annotation.__name__} values" if bad else None
    if annotation is int and spec.type == "float" and spec.fraction_of is None:
        return "an int field drawn as type float; use type int"
    return None


def _check_symbol_keys(profile: Profile, where: str, strategy: Any) -> None:
    """Per-symbol keys name a basket symbol and a field a symbol may have its own value of; a shared
    key is not hidden from a symbol by the strategy's own override of it (one line each)."""
    from gridctl.configs.overrides import ACCOUNT_KEYS, ACCOUNT_SECTIONS, split_symbol_key

    basket = profile_basket(strategy)
    for key in profile.search_space:
        try:
            split = split_symbol_key(key)
        except GridctlError as err:
            raise GridctlError(f"invalid profile {where}: search_space.{key}: {err}") from None
        if split is None:
            for sym, keys in strategy.symbol_overrides.items():
                if key in keys:
                    raise GridctlError(
                        f"invalid profile {where}: search_space.{key}: the strategy's symbol_overrides.{sym} "
                        f"sets {key}, so a shared draw would not reach {sym}; draw it per symbol "
                        "(per_symbol: true) or drop that override"
                    )
            continue
        sym, field = split
        if basket is None:
            raise GridctlError(
                f"invalid profile {where}: search_space.{key}: names {sym} but this study trades one symbol "
                "(name a basket in data.symbols, or use a strategy with strategy.symbols)"
            )
        if sym not in basket:
            raise GridctlError(
                f"invalid profile {where}: search_space.{key}: {sym} is not in the basket {list(basket)}"
            )
        section = field.partition(".")[0]
        if section in ACCOUNT_SECTIONS or field in ACCOUNT_KEYS:
            why = ACCOUNT_KEYS.get(field) or f"{section} is {ACCOUNT_SECTIONS[section]}"
            raise GridctlError(
                f"invalid profile {where}: search_space.{key}: {why}; draw {field} for the whole basket"
            )


def _check_space(profile: Profile, where: str, strategy: Any = None) -> None:
    if strategy is None:
        strategy = profile_strategy(profile, where)
    _check_symbol_keys(profile, where, strategy)
    fields = tunable_fields()
    problems = []
    for key, spec in profile.search_space.items():
        field = field_of(key)
        if field not in fields:
            close = difflib.get_close_matches(field, list(fields), n=1, cutoff=0.5)
            if not close:  # maybe only the field name is close (wrong section)
                names = {p.split(".")[1]: p for p in fields}
                hit = difflib.get_close_matches(field.rsplit(".", 1)[-1], list(names), n=1, cutoff=0.6)
                close = [names[hit[0]]] if hit else []
            hint = f"did you mean {close[0]!r}?" if close else "not a tunable strategy field"
            problems.append(f"  search_space.{key}: unknown strategy field; {hint}")
            continue
        if field in NOT_TUNABLE:
            problems.append(f"  search_space.{key}: {NOT_TUNABLE[field]}")
            continue
        kind_problem = _kind_problem(spec, fields[field])
        if kind_problem:
            problems.append(f"  search_space.{key}: {kind_problem}")
        if spec.fraction_of is not None and spec.fraction_of not in profile.search_space:
            problems.append(
                f"  search_space.{key}.fraction_of: {spec.fraction_of!r} is not a parameter of this "
                "search space (draw it first)"
            )
    if problems:
        raise GridctlError(_problems_message(where, problems))
    try:
        profile.ordered_params()
    except GridctlError as err:
        raise GridctlError(f"invalid profile {where}: {err}") from None
    _check_corners(profile, where, strategy)


def _check_corners(profile: Profile, where: str, strategy: Any) -> None:
    """Every corner of the space (all low, all high, mixed) must be a strategy the schema accepts, and
    at least one corner's wallet must margin an order (a balance range none of whose corners can, e.g.
    ``backtest.initial_balance`` 0.001..10 against 15 USDT of margin, ran every trial without a fill)."""
    from gridctl.configs.crosscheck import notional_margin_problem
    from gridctl.configs.loader import load_venue
    from gridctl.configs.overrides import apply_overrides

    venue = load_venue(profile.base.venue)
    margin_problems = []
    for raw in corner_draws(profile):
        values = resolve_draw(profile, raw, strategy)
        try:
            drawn, drawn_venue = apply_overrides(strategy, venue, values)
        except GridctlError as err:
            raise GridctlError(
                f"invalid profile {where}: search_space draws an invalid strategy at {raw}: {err}"
            ) from None
        margin_problems.append((raw, notional_margin_problem(drawn, drawn_venue)))
    if margin_problems and all(problem for _raw, problem in margin_problems):
        raw, problem = margin_problems[0]
        raise GridctlError(
            f"invalid profile {where}: no corner of search_space can trade; at {raw}: {problem}"
        )
