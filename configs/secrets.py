"""``${VAR}`` / ``${VAR:-default}`` references in config strings, and where each credential came from.

A default such as ``${BINANCE_API_KEY:-BACKTEST_MODE}`` lets a backtest load the venue file without keys,
but it must never let live trading start: :func:`require_live_credentials` refuses any credential that
came from a default or from an unset variable. As in the shell, a variable set to "" counts as unset.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gridctl.configs.errors import GridctlError
from gridctl.configs.schema import VenueConfig

#: Key paths of venue credentials: a missing variable leaves them empty instead of failing the load.
CREDENTIAL_PATHS: tuple[str, ...] = ("api.api_key", "api.api_secret")

_REF_RE = re.compile(r"\$\{(?P<var>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")

Origin = Literal["env", "default", "missing", "literal"]


@dataclass(frozen=True)
class CredentialSource:
    """Provenance of one credential: ``env``, ``default`` (of ``${VAR:-...}``), ``missing`` or ``literal``."""

    origin: Origin
    variables: tuple[str, ...] = ()

    def describe(self) -> str:
        """Short human text, never containing the secret itself."""
        refs = ", ".join(f"${{{v}}}" for v in self.variables)
        return {
            "env": f"from env {refs}",
            "default": f"default of {refs}; backtest only",
            "missing": f"{refs} not set" if refs else "not given",
            "literal": "written in the file",
        }[self.origin]


@dataclass(frozen=True)
class Expanded:
    """Result of expanding one string: the new value (None if a credential is missing) and provenance."""

    value: str | None
    source: CredentialSource


def expand_string(text: str, key_path: str, where: str, env: Mapping[str, str]) -> Expanded:
    """Replace every ``${VAR}`` / ``${VAR:-default}`` in ``text``.

    An unset variable without a default leaves a credential empty (origin ``missing``) and is an error
    for any other key, because nothing else may silently become empty.
    """
    if "${" not in text:
        return Expanded(text, CredentialSource("literal"))
    if "${" in _REF_RE.sub("", text):
        raise GridctlError(
            f"{where}: {key_path}: malformed reference in {_shown(text, key_path)}; "
            "write ${NAME} or ${NAME:-default}"
        )
    variables: list[str] = []
    origins: set[str] = set()
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        var, default = match["var"], match["default"]
        variables.append(var)
        value = env.get(var, "")
        if value:
            origins.add("env")
            return value
        if default is not None:
            origins.add("default")
            return default
        missing.append(var)
        return ""

    value = _REF_RE.sub(substitute, text)
    refs = tuple(variables)
    if missing:
        if key_path not in CREDENTIAL_PATHS:
            raise GridctlError(
                f"{where}: {key_path}: environment variable {', '.join(missing)} is not set and the "
                "reference has no ':-default'"
            )
        return Expanded(None, CredentialSource("missing", refs))
    origin: Origin = "default" if "default" in origins else "env"
    return Expanded(value, CredentialSource(origin, refs))


def _shown(text: str, key_path: str) -> str:
    """The raw value for an error message, masked for credentials."""
    return "the credential value" if key_path in CREDENTIAL_PATHS else repr(text)


def expand_tree(
    tree: object, where: str, env: Mapping[str, str] | None = None, prefix: str = ""
) -> tuple[object, dict[str, CredentialSource]]:
    """Expand references in every string of a parsed YAML tree; return it and credential provenance."""
    env = os.environ if env is None else env
    sources: dict[str, CredentialSource] = {}

    def walk(node: object, path: str) -> object:
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, str):
            expanded = expand_string(node, path, where, env)
            if path in CREDENTIAL_PATHS:
                sources[path] = expanded.source
            return expanded.value
        return node

    return walk(tree, prefix), sources


def credential_sources(venue: VenueConfig) -> dict[str, CredentialSource]:
    """Provenance of each credential of a VenueConfig (``literal``/``missing`` if built in memory)."""
    recorded: dict[str, CredentialSource] = dict(venue._credentials)
    for path in CREDENTIAL_PATHS:
        if path not in recorded:
            value = getattr(venue.api, path.split(".")[1])
            recorded[path] = CredentialSource("missing" if value is None else "literal")
    return recorded


def require_live_credentials(venue: VenueConfig) -> None:
    """Refuse live trading unless every api credential is a real value from an ``${ENV}`` reference.

    A default (``${VAR:-BACKTEST_MODE}``), a missing variable, an empty value and a secret written
    literally into the config file (where it would be committed and shared) are all refused.

    Raises GridctlError naming each bad field and the variable to set.
    """
    sources = credential_sources(venue)
    problems = []
    for path in CREDENTIAL_PATHS:
        source = sources[path]
        secret = getattr(venue.api, path.split(".")[1])
        refs = ", ".join(source.variables)
        if source.origin == "default":
            problems.append(
                f"{path} comes from the default of ${{{refs}}}, which is for backtests only; set {refs}"
            )
        elif source.origin == "missing" or secret is None or not secret.get_secret_value().strip():
            problems.append(f"{path} is empty" + (f"; set {refs}" if refs else ""))
        elif source.origin == "literal":
            problems.append(
                f"{path} is written literally in the file; write it as a ${{ENV_VAR}} reference "
                "and keep the secret in the environment"
            )
    if problems:
        raise GridctlError(f"{venue.origin}: live trading needs real API credentials: " + "; ".join(problems))


def mask(venue: VenueConfig, path: str) -> str:
    """Display text for a credential: never the value, always where it came from."""
    source = credential_sources(venue)[path]
    if source.origin == "missing":
        return f"<missing: {source.describe()}>"
    return f"*** ({source.describe()})"
