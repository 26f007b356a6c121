"""``${VAR}`` references, credential provenance, and the live-trading credential gate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import dump_resolved, load_venue
from gridctl.configs.secrets import CredentialSource, expand_string, require_live_credentials

CREDENTIAL_VARS = [
    "BINANCE_API_KEY",
    "BINANCE_API_SECRET",
    "BINANCE_TESTNET_API_KEY",
    "BINANCE_TESTNET_API_SECRET",
]


@pytest.fixture(autouse=True)
def _no_credentials_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in CREDENTIAL_VARS:
        monkeypatch.delenv(var, raising=False)


def test_default_serves_a_backtest_but_never_live(legacy_configs: Path) -> None:
    venue = load_venue(legacy_configs / "binance_futures.yaml")
    assert venue.api.api_key is not None and venue.api.api_key.get_secret_value() == "BACKTEST_MODE"
    with pytest.raises(GridctlError) as info:
        require_live_credentials(venue)
    message = str(info.value)
    assert "binance_futures.yaml" in message
    assert (
        "api.api_key comes from the default of ${BINANCE_API_KEY}" in message
        and "set BINANCE_API_KEY" in message
    )
    assert "api.api_secret comes from the default of ${BINANCE_API_SECRET}" in message


def test_env_credentials_pass_the_live_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINANCE_API_KEY", "k-123")
    monkeypatch.setenv("BINANCE_API_SECRET", "s-456")
    venue = load_venue("binance_futures")
    assert venue.api.api_key is not None and venue.api.api_key.get_secret_value() == "k-123"
    require_live_credentials(venue)


def test_one_env_credential_and_one_default_still_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINANCE_API_KEY", "k-123")
    with pytest.raises(GridctlError) as info:
        require_live_credentials(load_venue("binance_futures"))
    assert "api.api_key" not in str(info.value)
    assert "api.api_secret comes from the default of ${BINANCE_API_SECRET}" in str(info.value)


def test_missing_variable_without_default_loads_but_fails_live() -> None:
    venue = load_venue("binance_futures_testnet")
    assert venue.api.api_key is None and venue.api.api_secret is None
    with pytest.raises(GridctlError, match=r"api\.api_key is empty; set BINANCE_TESTNET_API_KEY"):
        require_live_credentials(venue)


def test_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # Shell semantics of ${VAR:-default}: an empty value takes the default.
    monkeypatch.setenv("BINANCE_API_KEY", "")
    venue = load_venue("binance_futures")
    assert venue.api.api_key is not None and venue.api.api_key.get_secret_value() == "BACKTEST_MODE"
    monkeypatch.setenv("BINANCE_TESTNET_API_KEY", "")
    assert load_venue("binance_futures_testnet").api.api_key is None


def test_credential_written_in_the_file_is_refused_live(tmp_path: Path) -> None:
    # A literal secret loads (a backtest needs no keys) but live trading requires ${ENV} references.
    tree = yaml.safe_load(Path(load_venue("binance_futures").origin).read_text())
    tree["api"].update(api_key="plain-key", api_secret="plain-secret")
    # the copy names the shipped symbol rules snapshot by its absolute path (it lives beside the original)
    shipped = Path(load_venue("binance_futures").origin).parent
    tree["symbol_rules_file"] = str(shipped / tree["symbol_rules_file"])
    path = tmp_path / "venue.yaml"
    path.write_text(yaml.safe_dump(tree))
    venue = load_venue(path)
    with pytest.raises(GridctlError) as info:
        require_live_credentials(venue)
    message = str(info.value)
    assert str(path) in message
    assert "api.api_key is written literally in the file" in message
    assert "api.api_secret is written literally in the file" in message
    assert "plain-key" not in message and "plain-secret" not in message


def test_override_can_point_a_credential_at_another_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "mine")
    monkeypatch.setenv("BINANCE_API_SECRET", "s")
    venue = load_venue("binance_futures", ["api.api_key=${MY_KEY}"])
    assert venue.api.api_key is not None and venue.api.api_key.get_secret_value() == "mine"
    require_live_credentials(venue)


def test_missing_variable_in_a_non_credential_field_fails_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRIDCTL_TEST_URL", raising=False)
    with pytest.raises(GridctlError) as info:
        load_venue("binance_futures", ["api.base_url=${GRIDCTL_TEST_URL}"])
    assert (
        "--set api.base_url=${GRIDCTL_TEST_URL}: api.base_url: environment variable GRIDCTL_TEST_URL"
        in str(info.value)
    )
    # With a default it loads, and an embedded reference keeps the text around it.
    venue = load_venue("binance_futures", ["api.base_url=https://${GRIDCTL_TEST_URL:-127.0.0.1:9}/fapi"])
    assert venue.api.base_url == "https://127.0.0.1:9/fapi"


@pytest.mark.parametrize("text", ["${BINANCE_API_KEY", "${1BAD}", "${}", "x${A-b}"])
def test_malformed_reference_is_an_error(text: str) -> None:
    with pytest.raises(GridctlError, match=r"api\.api_key: malformed reference in the credential value"):
        expand_string(text, "api.api_key", "v.yaml", {})


def test_printed_config_masks_secrets_and_says_where_they_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINANCE_API_KEY", "very-secret-key")
    api = dump_resolved(load_venue("binance_futures"))["api"]
    assert api["api_key"] == "*** (from env ${BINANCE_API_KEY})"
    assert api["api_secret"] == "*** (default of ${BINANCE_API_SECRET}; backtest only)"
    assert "very-secret-key" not in repr(load_venue("binance_futures"))
    testnet = dump_resolved(load_venue("binance_futures_testnet"))["api"]
    assert testnet["api_key"] == "<missing: ${BINANCE_TESTNET_API_KEY} not set>"


def test_error_messages_never_echo_a_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINANCE_API_KEY", "very-secret-key")
    with pytest.raises(GridctlError) as info:
        load_venue("binance_futures", ["api.api_key=[1, 2]"])  # a list is not a string: type error
    assert "api.api_key: Input should be a valid string" in str(info.value)
    assert "got" not in str(info.value)


names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,12}", fullmatch=True)
values = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
defaults = st.text(st.characters(blacklist_characters="}", blacklist_categories=("Cs",)), max_size=20)


@given(names, values, defaults)
def test_set_variable_wins_over_the_default(var: str, value: str, default: str) -> None:
    got = expand_string(f"${{{var}:-{default}}}", "api.api_key", "v.yaml", {var: value})
    assert got.value == value and got.source == CredentialSource("env", (var,))


@given(names, defaults)
def test_unset_variable_takes_the_default(var: str, default: str) -> None:
    got = expand_string(f"pre-${{{var}:-{default}}}-post", "api.base_url", "v.yaml", {})
    assert got.value == f"pre-{default}-post" and got.source.origin == "default"
