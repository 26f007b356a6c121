"""What an exported trial reproduces: the backtest commands behind each number the study reports for it.

A trial's told value is computed per scored window (the whole window, or each walk-forward train
window) under the intrabar path rule that scored it (``objective.path_rule: worst``: the rule that gave
the trial its lowest objective there). :func:`reproduce_lines` writes, for the export's header, one
``gridctl backtest`` command per scored window with that rule set, and the figures the study stored for
it, so running the command shows the same numbers; walk-forward adds the test windows, labelled out of
sample, and says how the told value combines the windows.
"""

from __future__ import annotations

import math
import time
from typing import Any

from gridctl.research.stats import BRACKET_RULES

DAY_MS = 86_400_000
#: The stored figures printed beside each command (``research.objectives.row_metrics`` names).
SHOWN = ("total_return_pct", "max_drawdown_bar_close_pct", "sharpe", "trades")


def window_day(ms: int, end: bool = False) -> str:
    """YYYY-MM-DD of a window bound (an end that is not midnight rounds up to the next day)."""
    day = ms // DAY_MS + (1 if end and ms % DAY_MS else 0)
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))


def day_span(bounds: Any, sep: str = "..") -> str:
    """``YYYY-MM-DD..YYYY-MM-DD`` of a window's (start_ms, end_ms), end exclusive (a partial last day
    rounds up to the next day, as ``window_day``); ``-`` for no window. Every printed window (`study
    show`, the study report, the export header) is written by this function."""
    if not bounds:
        return "-"
    start, end = bounds
    return f"{window_day(start)}{sep}{window_day(end, end=True)}"


def scored_rule(metrics: dict[str, float]) -> str | None:
    """The intrabar path rule a window's stored metrics were scored on (None for older studies)."""
    index = metrics.get("path_rule_index")
    if index is None or not math.isfinite(index):
        return None
    return BRACKET_RULES[int(index)]


def scored_config(cfg: Any, metrics: dict[str, float]) -> Any:
    """``cfg`` under the intrabar path rule ``metrics`` were scored on (``cfg`` itself when that is its
    configured rule, or for older studies)."""
    rule = scored_rule(metrics)
    if rule is None or rule == cfg.backtest.intrabar_path:
        return cfg
    data = cfg.model_dump()
    data["backtest"]["intrabar_path"] = rule
    return type(cfg).model_validate(data)


def reproduce_lines(study: Any, trial: Any, configured_rule: str) -> tuple[list[str], str | None]:
    """Header comment lines for an exported ``trial``, and the rule the exported config should carry.

    Without walk-forward the config carries the rule that scored the whole window, so the plain
    command reproduces it. With walk-forward the config keeps ``configured_rule`` and each window's
    command sets its own rule with ``--set``.
    """
    from gridctl.research.objectives import objective_values
    from gridctl.research.optimize import ATTR, restore_metrics, study_info, study_profile

    profile = study_profile(study)
    info = study_info(study)
    data = info.get("data") or {}
    windows = data.get("windows") or []
    attrs = trial.user_attrs[ATTR]
    base = (
        f"gridctl backtest --strategy THIS_FILE --venue {profile.base.venue}"
        + f" --exchange {profile.data.exchange}"
        + (f" --symbol {profile.data.symbol}" if profile.data.symbol else "")
        + f" --timeframe {profile.data.timeframe}"
    )

    def figures(metrics: dict[str, float]) -> str:
        shown = ", ".join(f"{k} {metrics[k]:.6g}" for k in SHOWN if k in metrics)
        value = ", ".join(f"{v:.6g}" for v in objective_values(metrics, profile.objective))
        return f"{shown}; objective {value}"

    def command(w: dict[str, Any], rule: str | None, set_rule: bool) -> str:
        cmd = f"{base} --start {window_day(w['start_ms'])} --end {window_day(w['end_ms'], end=True)}"
        if set_rule and rule is not None and rule != configured_rule:
            cmd += f" --set backtest.intrabar_path={rule}"
        return cmd

    lines: list[str] = []
    holdout = data.get("holdout")
    if profile.validation.scheme == "none":
        metrics = restore_metrics(attrs["metrics"])
        rule = scored_rule(metrics)
        full = next((w for w in windows if w["kind"] == "full"), None)
        if full is None:  # a study stored before windows were recorded: the whole data window
            full = {"start_ms": data["start_ms"], "end_ms": data["end_ms"]}
        lines.append(
            f"# reproduce: {command(full, rule, set_rule=False)}"
            + (f"  (scored on intrabar_path {rule}, set below)" if rule else "")
        )
        lines.append(f"#   the study stored: {figures(metrics)}")
        config_rule = rule
    else:
        lines.append(
            "# walk-forward: the told value is the mean objective over the train windows (in-sample); "
            "each window runs from a fresh account:"
        )
        for kind, label, stored in (
            ("train", "in-sample", attrs.get("in_sample", [])),
            ("test", "OUT-OF-SAMPLE", attrs.get("out_of_sample", [])),
        ):
            for w in (w for w in windows if w["kind"] == kind and w["fold"] < len(stored)):
                metrics = restore_metrics(stored[w["fold"]])
                lines.append(f"# fold {w['fold']} {kind} ({label}): {command(w, scored_rule(metrics), True)}")
                lines.append(f"#   the study stored: {figures(metrics)}")
        config_rule = None
    if holdout is not None:
        lines.append(
            f"# hold-out {day_span((holdout['start_ms'], holdout['end_ms']), ' .. ')} (exclusive): "
            "no trial was scored on it; `gridctl study show` reports the winner there under the intrabar "
            "rule it names (the worst with objective.path_rule worst), which this command reproduces with "
            "`--set backtest.intrabar_path=<rule>`:"
        )
        lines.append(f"#   {command(holdout, None, False)}")
    return lines, config_rule
