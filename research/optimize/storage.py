"""Where a study lives: one Optuna journal file per study in the studies directory, or an RDB URL.

A journal file needs no server; ``postgresql://...`` lets many workers on many machines share one study,
with heartbeats so a killed worker's running trials are failed instead of staying RUNNING.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import optuna

from gridctl.configs.errors import GridctlError
from gridctl.research.options import DEFAULT_HEARTBEAT_S
from gridctl.research.optuna_compat import BatchSyncedJournalBackend, TimedJournalStorage, first_bad_record


def default_studies_dir() -> Path:
    """``$GRIDCTL_STUDIES_DIR``, else ``gridctl-studies`` beside the default data directory."""
    explicit = os.environ.get("GRIDCTL_STUDIES_DIR")
    if explicit:
        return Path(explicit).expanduser()
    from gridctl.data.store import default_data_dir

    data = default_data_dir()
    return data.parent / "gridctl-studies"


#: Longest study name: Optuna renames its journal lock to ``<name>.journal.lock<uuid4>.rename`` (56 bytes
#: after the name) and file names stop at 255 bytes (a 300-character name raised ENAMETOOLONG).
MAX_STUDY_NAME_BYTES = 190


def journal_path(study_name: str, studies_dir: Path | None = None) -> Path:
    """The journal file of a study in the studies directory."""
    if not study_name or "/" in study_name or study_name.startswith("."):
        raise GridctlError(f"study name {study_name!r}: use letters, digits, '-', '_' (no '/')")
    if len(study_name.encode()) > MAX_STUDY_NAME_BYTES:
        raise GridctlError(
            f"study name {study_name[:40]}... is {len(study_name.encode())} bytes; "
            f"at most {MAX_STUDY_NAME_BYTES}"
        )
    return (studies_dir or default_studies_dir()) / f"{study_name}.journal"


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` URLs use the psycopg (v3) driver gridctl declares."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


#: Ticks of the heartbeat thread per heartbeat period ``--heartbeat h``: every ``h / 4`` a worker beats
#: for its trials in flight and looks for other workers' stale trials (DESIGN.md, "Dead workers": the
#: schedule and its derivation).
TICKS_PER_HEARTBEAT = 4


def stale_grace_s(heartbeat_s: int) -> int:
    """Seconds without a heartbeat after which a trial's worker counts as gone (shared studies): one period.

    A live worker beats every tick (``heartbeat_tick_s``, a quarter period), so its trials are at most a
    tick old plus the time a beat waits for the GIL and the database; a dead worker's last beat is
    stale one period after it and a live worker finds it within one more tick: failed within 1.25
    periods plus two database round trips, well inside the two periods promised. An integer, as
    Optuna's ``RDBStorage(grace_period=...)`` documents.
    """
    return int(heartbeat_s)


def heartbeat_tick_s(heartbeat_s: int) -> float:
    """Seconds between two heartbeats of a worker's trials in flight, and between two of its looks for
    other workers' stale trials: a quarter of ``--heartbeat``.

    DESIGN.md's derivation names the two b (beat) and c (check): a live worker is never failed while
    b + s + 3d < g, a dead one is failed within two periods while g + c + s + 3d < 2h (s the longest
    stall, d the longest database operation). With g = h both hold for the same stalls when b = c, so
    they are one value;
    the heartbeat thread (``workers``) still keeps two timers, since the main thread's beats restart
    the beat timer and never the check timer.
    """
    return heartbeat_s / TICKS_PER_HEARTBEAT


def open_storage(
    study_name: str,
    storage: str | None = None,
    studies_dir: Path | None = None,
    heartbeat_s: int = DEFAULT_HEARTBEAT_S,
    create: bool = True,
) -> optuna.storages.BaseStorage:
    """The study's storage: a journal file in the studies dir, or an RDB URL (with heartbeats)."""
    if storage is None:
        path = journal_path(study_name, studies_dir)
        if not path.exists() and not create:
            raise GridctlError(f"no study {study_name!r} in {path.parent} (gridctl study list shows them)")
        if path.exists() and not path.is_file():
            raise GridctlError(f"study {study_name!r}: {path} is not a journal file (a directory or device)")
        if path.parent.exists() and not path.parent.is_dir():
            raise GridctlError(f"studies directory {path.parent} is a file, not a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = BatchSyncedJournalBackend(str(path))
        try:
            return TimedJournalStorage(backend)
        except Exception as err:  # Optuna's replay of a damaged journal: many exception types
            bad = first_bad_record(path)
            where = f"record {bad[0]}: {bad[1]}" if bad else f"{type(err).__name__}: {err}"
            raise GridctlError(
                f"study {study_name!r}: journal {path} is damaged ({where}); gridctl cannot replay it"
            ) from None
    try:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(
                        sqlalchemy_url(storage),
                        heartbeat_interval=heartbeat_s,
                        grace_period=stale_grace_s(heartbeat_s),
                        engine_kwargs={"pool_pre_ping": True},
                    )
            except ImportError:
                raise
            except Exception:
                # Workers starting together on an empty database race to create Optuna's tables;
                # the loser sees a unique violation and succeeds once the tables exist.
                if attempt == 4:
                    raise
                time.sleep(0.5 + attempt)
        raise AssertionError("unreachable")  # pragma: no cover
    except ImportError as err:
        raise GridctlError(
            f"--storage {storage}: the database driver is missing ({err}); "
            "install gridctl with the postgres extra: pip install -e '.[postgres]'"
        ) from None
    except Exception as err:  # sqlalchemy's OperationalError and friends: one clear line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GridctlError(f"--storage: cannot open {_redact(storage)}: {first}") from None


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url
