"""Shared fixtures: where the repository and the read-only ../shared material live."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Tests never assert timings: no per-example deadline and no too-slow health check, so a loaded machine
# (CI runs two workers on two cores) cannot fail a property test for being slow.
settings.register_profile("gridctl", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gridctl")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder beside the checkout (CI provides it)."""
    if not (SHARED / "data" / "real").is_dir():
        pytest.fail(f"expected the shared material at {SHARED} (see README: Tests)")
    return SHARED


@pytest.fixture(scope="session")
def real_data(shared_dir: Path) -> Path:
    """Real Binance USD-M data files (../shared/data/real)."""
    return shared_dir / "data" / "real"


@pytest.fixture(scope="session")
def legacy_configs(shared_dir: Path) -> Path:
    """The audited bot's own configs, which gridctl must load unchanged."""
    return shared_dir / "fixtures" / "legacy_naut_hedgegrid"
