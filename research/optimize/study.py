"""Creating or joining a study: the profile and data recorded on it, and refused when they differ."""

from __future__ import annotations

import time
import warnings
from typing import Any

import optuna

from gridctl.configs.errors import GridctlError
from gridctl.research.optimize.samplers import _sampler_seed, make_pruner, make_sampler
from gridctl.research.optimize.trials import STUDY_ATTR, objective_metric_names
from gridctl.research.optimize.workload import Workload
from gridctl.research.profiles import Profile

#: Longest a worker waits for a new, empty study to get its profile from the worker that created it.
CREATING_WAIT_S = 5.0


def check_same_data(study_name: str, stored: dict[str, Any] | None, work: Workload) -> None:
    """Refuse to resume or re-evaluate a study on different data than it was run on."""
    if stored is None:
        return
    now = work.describe()
    keys = ("exchange", "symbol", "timeframe", "start_ms", "end_ms", "bars", "prices_sha256")
    diff = [k for k in keys if k in stored and stored[k] != now.get(k)]
    if diff:
        was = ", ".join(f"{k}={stored.get(k)}" for k in diff)
        is_ = ", ".join(f"{k}={now.get(k)}" for k in diff)
        raise GridctlError(
            f"study {study_name!r} was run on different data ({was}) than --data-dir gives now ({is_}); "
            "point --data-dir at the study's data directory"
        )


def create_or_load_study(
    profile: Profile,
    work: Workload | None,
    study_name: str,
    storage: optuna.storages.BaseStorage,
    shared: bool = False,
) -> optuna.Study:
    """Create the study (recording the profile) or load it, refusing one made by a different profile."""
    directions = profile.objective.directions
    try:
        existing = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        existing = None
    if existing is not None:
        stored = existing.user_attrs.get(STUDY_ATTR)
        # Workers started together race: another may have created the study a moment ago and not yet
        # recorded its profile (it does so milliseconds later). A study with trials is never that.
        deadline = time.monotonic() + CREATING_WAIT_S
        while stored is None and time.monotonic() < deadline and not existing.get_trials(deepcopy=False):
            time.sleep(0.05)
            stored = existing.user_attrs.get(STUDY_ATTR)
        if stored is None:
            raise GridctlError(f"study {study_name!r} was not created by gridctl optimize (no profile)")
        if stored["fingerprint"] != profile.fingerprint():
            raise GridctlError(
                f"study {study_name!r} was created with profile {stored['name']!r} "
                f"(fingerprint {stored['fingerprint']}), which differs from profile {profile.name!r} now "
                f"({profile.fingerprint()}); use another --study-name"
            )
        if work is not None:
            check_same_data(study_name, stored.get("data"), work)
        n = len(existing.get_trials(deepcopy=False))
        return optuna.load_study(
            study_name=study_name,
            storage=storage,
            sampler=make_sampler(profile, _sampler_seed(profile, n, shared), shared),
            pruner=make_pruner(profile),
        )
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=make_sampler(profile, _sampler_seed(profile, 0, shared), shared),
        pruner=make_pruner(profile),
        directions=directions,
        load_if_exists=True,
    )
    if not study.metric_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(objective_metric_names(profile))
    if STUDY_ATTR not in study.user_attrs:
        study.set_user_attr(
            STUDY_ATTR,
            {
                "name": profile.name,
                "fingerprint": profile.fingerprint(),
                "profile": profile.model_dump(mode="json"),
                "data": work.describe() if work is not None else None,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
    return study
