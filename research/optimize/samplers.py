"""The profile's Optuna sampler and pruner, and the seed each worker draws with."""

from __future__ import annotations

import hashlib
import os
import socket
import warnings
from typing import Any

import optuna

from gridctl.research.optuna_compat import trial_id
from gridctl.research.profiles import Profile


def make_sampler(profile: Profile, seed: int, shared: bool = False) -> optuna.samplers.BaseSampler:
    """The profile's sampler, seeded (``shared``: a server study other workers may join).

    Hard limits reach the samplers as Optuna constraints recorded on each trial before it is told
    (``write_constraints``: the trial system attr ``constraints``, which Optuna 5 reads in TPE,
    NSGA-II and ``best_trial`` and optuna-dashboard reads too; the older ``constraints_func`` sampler
    argument is deprecated there and feeds the same trial attribute).
    """
    spec = profile.sampler
    if spec.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.kind == "qmc":
        # Optuna keeps the sequence position on the study, keyed by the scramble seed. A local study
        # scrambles with the PROFILE seed, so a resume continues the same sequence. Workers of a
        # shared study each scramble with their own (derived) seed: Optuna's position counter is
        # read and written without a transaction, so workers sharing one sequence would draw some
        # points twice; each worker's own points are still a low-discrepancy sequence.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(
                qmc_type="sobol",
                scramble=True,
                seed=seed if shared else profile.seed,
                independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                warn_independent_sampling=False,
            )
    if spec.kind == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=spec.n_startup_trials or 10, multivariate=spec.multivariate
        )
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=spec.population_size or 50)


def make_pruner(profile: Profile) -> optuna.pruners.BasePruner:
    """The profile's pruner (walk-forward folds are its steps)."""
    if profile.pruner.kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=profile.pruner.n_startup_trials, n_warmup_steps=profile.pruner.n_warmup_steps
        )
    return optuna.pruners.NopPruner()


def _sampler_seed(profile: Profile, existing: int, shared: bool) -> int:
    """The profile seed on a fresh local study; a derived seed when resuming or joining a server study.

    Resuming with the original seed would redraw the first trials' points; workers on one server
    must not draw the same points either, so those mix in the trial count and the process id.
    """
    if existing == 0 and not shared:
        return profile.seed
    mix = f"{profile.seed}:{existing}:{os.getpid() if shared else 0}:{socket.gethostname() if shared else ''}"
    return int.from_bytes(hashlib.sha256(mix.encode()).digest()[:4], "little") & 0x7FFFFFFF


class LocalDraws:
    """A shared study's worker drawing its batches on an in-memory study (``optuna_compat.rdb_batch``).

    The in-memory study holds this worker's own trials, told as the shared study tells them, so a
    sampler's state (QMC's search space and sequence position, NSGA-II's generations) evolves as it
    would on the shared study. A sampler that learns from results (``tpe``, ``nsga2``) also sees every
    finished trial of the other workers, copied in by :meth:`sync` before each batch.
    """

    def __init__(self, sampler: optuna.samplers.BaseSampler, directions: list[Any], learns: bool) -> None:
        self.study = optuna.create_study(sampler=sampler, directions=directions)
        self.learns = learns
        self._known: set[int] = set()  # shared trial ids already in the in-memory study

    def ask(self, dists: dict[str, optuna.distributions.BaseDistribution], k: int) -> list[optuna.Trial]:
        """Draw ``k`` trials."""
        return [self.study.ask(dists) for _ in range(k)]

    def system_attrs(self, trials: list[optuna.Trial]) -> list[dict[str, Any]]:
        """The system attrs the sampler wrote on ``trials`` while drawing (NSGA-II: the generation)."""
        frozen = self.study.get_trials(deepcopy=False)
        return [dict(frozen[t.number].system_attrs) for t in trials]

    def own(self, shared_ids: list[int]) -> None:
        """The shared ids of trials drawn here (never copied in by :meth:`sync`)."""
        self._known.update(shared_ids)

    def sync(self, shared: optuna.Study) -> int:
        """Copy the other workers' finished trials into the in-memory study (learning samplers only)."""
        if not self.learns:
            return 0
        added = 0
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        for t in shared.get_trials(deepcopy=False, states=finished):
            tid = trial_id(t)
            if tid not in self._known:
                self._known.add(tid)
                self.study.add_trial(t)
                added += 1
        return added
