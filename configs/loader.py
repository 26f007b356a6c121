"""Load strategy and venue configs from YAML: name discovery, ``--set`` overrides, friendly errors.

Every problem becomes one :class:`GridctlError` naming the file (or the ``--set`` override), the full key
path and the reason; all bad keys of a file are reported at once, each with the closest valid key.
There is no fallback: a name that does not resolve to a shipped file is an error listing the names.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from gridctl import configs
from gridctl.configs import secrets
from gridctl.configs.errors import GridctlError
from gridctl.configs.files import path_kind, require_regular_file
from gridctl.configs.schema import (
    FieldRuleError,
    StrategyConfig,
    VenueConfig,
    ccxt_to_instrument,
    size_unit_changes,
)

Kind = Literal["strategy", "venue"]
ConfigT = TypeVar("ConfigT", StrategyConfig, VenueConfig)

PACKAGE_DIR = Path(configs.__file__).resolve().parent
SHIPPED_DIRS: dict[Kind, Path] = {"strategy": PACKAGE_DIR / "strategies", "venue": PACKAGE_DIR / "venues"}
MODELS: dict[Kind, type[BaseModel]] = {"strategy": StrategyConfig, "venue": VenueConfig}


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------


def load_strategy(
    path_or_name: str | Path, overrides: Sequence[str] = (), option: str = "--set"
) -> StrategyConfig:
    """Load a strategy by shipped name (``default``) or YAML path, apply ``k.k=v`` overrides, validate.

    ``option`` is the flag the overrides came from, named in messages (``--set``).
    """
    return _load("strategy", StrategyConfig, path_or_name, overrides, option)


def retarget_strategy(
    path_or_name: str | Path, strategy: StrategyConfig, symbol: str | None, overrides: Sequence[str] = ()
) -> StrategyConfig:
    """``strategy`` (loaded from ``path_or_name`` with ``overrides``) trading ``symbol``, as every
    ``--symbol`` runs it (`backtest`, `live`, `config validate`) and a profile's ``data.symbol``.

    A one-symbol strategy's ``strategy.instrument_id`` is set to ``symbol`` (its exchange rules then come
    from the venue, for that symbol). Without a ``symbol``, with its own instrument, or for a basket
    strategy (``strategy.symbols``) it comes back unchanged: each caller refuses a ``--symbol`` beside a
    basket in its own words.
    """
    if symbol is None or symbol == strategy.ccxt_symbol or strategy.strategy.symbols is not None:
        return strategy
    return load_strategy(path_or_name, [*overrides, f"strategy.instrument_id={ccxt_to_instrument(symbol)}"])


def refuse_inert_symbol_overrides(strategy: StrategyConfig) -> None:
    """A one-symbol run (`backtest`, `live`, a study or `config validate` without ``--symbols``) trades
    the strategy's own sections: per-symbol overrides of a strategy without ``strategy.symbols`` would
    change nothing, so such a run is refused. The same file runs as a basket (``--symbols``, a profile's
    ``data.symbols``), where each symbol's overrides apply; that is why the loader itself accepts it."""
    if strategy.symbol_overrides and strategy.strategy.symbols is None:
        listed = list(strategy.symbol_overrides)
        raise GridctlError(
            f"invalid strategy config {strategy.origin}: symbol_overrides: {listed}: "
            "per-symbol overrides need a basket (strategy.symbols); a single-symbol strategy sets those "
            "values in its own sections (or trade it as a one-symbol basket: --symbols)"
        )


def load_venue(path_or_name: str | Path, overrides: Sequence[str] = (), option: str = "--set") -> VenueConfig:
    """Load a venue by shipped name (``binance_futures``) or YAML path, apply overrides, validate.

    ``option`` is the flag the overrides came from, named in messages (``--set``, ``--venue-set``).
    """
    return _load("venue", VenueConfig, path_or_name, overrides, option)


def shipped_names(kind: Kind) -> list[str]:
    """Names of the configs shipped inside the package, e.g. ``["default", "hedge_grid_v1"]``."""
    return sorted(p.stem for p in SHIPPED_DIRS[kind].glob("*.yaml"))


def resolve_path(path_or_name: str | Path, kind: Kind) -> Path:
    """An existing file path as given, else ``configs/<kind>s/<name>.yaml``; anything else is an error.

    A path that exists but is no regular file (a folder, FIFO, device, symlink loop) is named as what
    it is, never reported as "not found" or read (a FIFO would block).
    """
    candidate = Path(path_or_name).expanduser()
    found = path_kind(candidate)
    if found == "a regular file":
        return candidate
    text = str(path_or_name)
    looks_like_path = "/" in text or "\\" in text or text.endswith((".yaml", ".yml"))
    if not looks_like_path:
        shipped = SHIPPED_DIRS[kind] / f"{text}.yaml"
        if shipped.is_file():
            return shipped
    if found != "missing":
        raise GridctlError(f"{kind} config {text}: is {found}, not a YAML file")
    if looks_like_path:
        raise GridctlError(f"{kind} config file not found: {text}")
    names = ", ".join(shipped_names(kind)) or "none"
    other: Kind = "venue" if kind == "strategy" else "strategy"
    if text in shipped_names(other):
        raise GridctlError(
            f"{text!r} is a shipped {other} config, not a {kind} config ({kind} configs: {names})"
        )
    raise GridctlError(
        f"no {kind} config named {text!r}; shipped {kind} configs: {names} (or give a YAML path)"
    )


def detect_kind(path_or_name: str | Path) -> Kind:
    """Tell a strategy file from a venue file by its top-level sections (or by the shipped name)."""
    path = Path(path_or_name).expanduser()
    what = path_kind(path)
    if what not in ("a regular file", "missing"):
        raise GridctlError(f"config {path_or_name}: is {what}, not a YAML file")
    if what == "missing":
        found = [k for k in MODELS if _resolves(path_or_name, k)]
        if not found:
            listing = "; ".join(f"{k} configs: {', '.join(shipped_names(k))}" for k in MODELS)
            raise GridctlError(f"no config file or shipped name {str(path_or_name)!r} ({listing})")
        return found[0]
    tree = read_yaml(path)
    votes = {k: len(set(tree) & set(MODELS[k].model_fields)) for k in MODELS}
    if not any(votes.values()):
        check_kind(tree, "strategy config", str(path))  # a profile or a symbol-rules snapshot is named
    if votes["strategy"] == votes["venue"]:
        raise GridctlError(
            f"{path}: cannot tell whether this is a strategy or a venue config "
            f"(top-level keys: {', '.join(map(str, tree))}); pass --kind strategy or --kind venue"
        )
    return max(votes, key=lambda k: votes[k])


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML file into a mapping; syntax errors and duplicate keys name the file and line."""
    text = read_text_utf8(path)
    if len(text) > MAX_CONFIG_CHARS:
        raise GridctlError(
            f"{path}: {len(text):,} characters; a config file is at most {MAX_CONFIG_CHARS:,} "
            "(is this really a strategy or venue file?)"
        )
    try:
        tree = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        raise GridctlError(f"{path}: YAML syntax error{_yaml_problem(err)}") from None
    if tree is None:
        raise GridctlError(f"{path}: file is empty; expected a mapping of config sections")
    if not isinstance(tree, dict):
        raise GridctlError(
            f"{path}: expected a mapping of config sections at the top, got {type(tree).__name__}"
        )
    return tree


def read_text_utf8(path: Path) -> str:
    """A config file's text; unreadable or not UTF-8 is a GridctlError naming the file, line and byte."""
    require_regular_file(path, "config")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise GridctlError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise GridctlError(
            f"{path}: not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start} "
            f"(line {line}, column {column}) is invalid; save the file as UTF-8"
        ) from None


def dump_resolved(cfg: StrategyConfig | VenueConfig) -> dict[str, Any]:
    """Every field with its effective value (defaults filled, ``${VAR}`` expanded), secrets masked."""
    data = cfg.model_dump(mode="json")
    if isinstance(cfg, VenueConfig):
        for path in secrets.CREDENTIAL_PATHS:
            section, key = path.split(".")
            data[section][key] = secrets.mask(cfg, path)
    return data


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------


def _resolves(path_or_name: str | Path, kind: Kind) -> bool:
    try:
        resolve_path(path_or_name, kind)
    except GridctlError:
        return False
    return True


def _load(
    kind: Kind,
    model: type[ConfigT],
    path_or_name: str | Path,
    overrides: Sequence[str],
    option: str = "--set",
) -> ConfigT:
    path = resolve_path(path_or_name, kind)
    where = str(path)
    tree = read_yaml(path)
    check_kind(tree, f"{kind} config", where)
    rules_file = _merge_symbol_rules_file(tree, path) if kind == "venue" else None
    tree, sources = secrets.expand_tree(tree, where)
    from_file = _key_paths(tree)
    set_paths: dict[tuple[str, ...], str] = {}
    for text in overrides:
        keys, value = _parse_override(text, option)
        value, override_sources = secrets.expand_tree(value, f"{option} {text}", prefix=".".join(keys))
        _apply_override(tree, keys, value, f"{option} {text}")
        set_paths[keys] = text
        sources.update(override_sources)
    if kind == "strategy" and isinstance(tree.get("grid"), dict):
        set_grid = {k[1]: tree["grid"].get(k[1]) for k in set_paths if len(k) == 2 and k[0] == "grid"}
        tree["grid"].update(size_unit_changes(set_grid))
    try:
        cfg = model.model_validate(tree)
    except ValidationError as err:
        raise GridctlError(_format_errors(err, kind, model, where, set_paths, from_file, option)) from None
    cfg._origin = where + "".join(f" {option} {t}" for t in overrides)
    if isinstance(cfg, StrategyConfig) and cfg.symbol_overrides:
        from gridctl.configs.overrides import basket_strategies

        try:  # each symbol's overrides go through the one override engine, as --set does
            basket_strategies(cfg)
        except GridctlError as err:
            raise GridctlError(f"invalid strategy config {where}: {err}") from None
    if isinstance(cfg, VenueConfig):
        cfg._credentials = sources
        cfg._rules_file = rules_file
    return cfg


#: Top-level sections that mark an optimization profile (its model, ``Profile``, lives in research/, above
#: this layer; tests/research/test_profiles.py checks these are Profile fields and no config section).
PROFILE_SECTIONS = frozenset({"search_space", "sampler", "pruner", "objective", "validation"})


def _kind_sections() -> dict[str, frozenset[str]]:
    """Each kind of gridctl YAML file and the top-level sections only that kind has."""
    full = {
        "strategy config": frozenset(StrategyConfig.model_fields),
        "venue config": frozenset(VenueConfig.model_fields),
        "optimization profile": PROFILE_SECTIONS,
        "symbol-rules snapshot": frozenset(SNAPSHOT_KEYS),
    }
    return {k: v - frozenset().union(*(o for n, o in full.items() if n != k)) for k, v in full.items()}


#: Where each kind of file is given (named when a file of that kind turns up in the wrong place).
KIND_USES = {
    "strategy config": "give it as --strategy",
    "venue config": "give it as --venue",
    "optimization profile": "give it as `gridctl optimize --profile`",
    "symbol-rules snapshot": "a venue config names it in symbol_rules_file",
}


def check_kind(tree: dict[str, Any], kind: str, where: str) -> None:
    """One line when a file of another kind is given (a strategy as the venue, a profile as the strategy,
    the symbol-rules snapshot as the venue), not a list of every required section it lacks: it holds
    sections only another kind has and none only this kind has. ``kind`` names a key of
    ``_kind_sections`` ("strategy config", "venue config", "optimization profile")."""
    marks = _kind_sections()
    keys = {k for k in tree if isinstance(k, str)}
    if keys & marks[kind]:
        return
    votes = {k: sorted(keys & v) for k, v in marks.items() if k != kind and keys & v}
    if votes:
        other = max(votes, key=lambda k: len(votes[k]))
        raise GridctlError(
            f"{where} is {_a(other)} (sections {', '.join(votes[other])}), not {_a(kind)}; {KIND_USES[other]}"
        )


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


# ----------------------------------------------------------------------------------------------------
# Per-symbol exchange rules snapshot (symbol_rules_file)
# ----------------------------------------------------------------------------------------------------

SNAPSHOT_KEYS = {"snapshot_date", "source", "symbols", "brackets"}


def _merge_symbol_rules_file(tree: dict[str, Any], venue_path: Path) -> str | None:
    """Read ``symbol_rules_file`` (relative to the venue file) into ``symbol_rules`` and ``margin.brackets``.

    The snapshot holds ``snapshot_date``, ``source``, ``symbols`` (ccxt symbol -> rules) and ``brackets``
    (ccxt symbol -> tiers). A symbol the venue file also defines inline is an error: one source per rule.
    """
    name = tree.get("symbol_rules_file")
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip():
        raise GridctlError(f"{venue_path}: symbol_rules_file must be a file name, got {name!r}")
    snap_path = (venue_path.parent / name).resolve()
    if not snap_path.is_file():
        raise GridctlError(f"{venue_path}: symbol_rules_file {name!r} not found (looked for {snap_path})")
    snap = read_yaml(snap_path)
    unknown = sorted(set(snap) - SNAPSHOT_KEYS)
    missing = sorted({"snapshot_date", "source", "symbols"} - set(snap))
    if unknown or missing:
        raise GridctlError(
            f"{snap_path}: a symbol rules snapshot has keys {sorted(SNAPSHOT_KEYS)}"
            + (f"; unknown: {unknown}" if unknown else "")
            + (f"; missing: {missing}" if missing else "")
        )
    for key, target in (("symbols", ("symbol_rules",)), ("brackets", ("margin", "brackets"))):
        table = snap.get(key)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise GridctlError(f"{snap_path}: {key} must map ccxt symbols to entries")
        node = tree
        for part in target[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise GridctlError(f"{venue_path}: {part} must be a section")
        have = node.setdefault(target[-1], {})
        if not isinstance(have, dict):
            raise GridctlError(f"{venue_path}: {'.'.join(target)} must map ccxt symbols to entries")
        both = sorted(set(have) & set(table))
        if both:
            raise GridctlError(
                f"{venue_path}: {'.'.join(target)} defines {both} that {snap_path.name} ({key}) defines too; "
                "keep one source per symbol"
            )
        have.update(table)
    # The rules are inline now (a dump of the loaded venue reloads as it is); the file is remembered for
    # messages and results (VenueConfig.rules_source).
    del tree["symbol_rules_file"]
    return f"{snap_path} (snapshot {snap['snapshot_date']})"


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line for a YAML error: `` at line L, column C: reason`` (PyYAML's own text spans lines)."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = err.problem or err.context or "invalid YAML"
        return f"{where}: {reason}"
    return ": " + " ".join(str(err).split())


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (``1e9``), bounded work, merge keys, and no duplicate keys.

    PyYAML resolves plain scalars by YAML 1.1 rules, where a float needs a dot: ``1e9`` would stay the
    string "1e9". The extra resolver below adds the YAML 1.2 core-schema forms without a dot.

    Crafted input cannot hang or crash the loader: nesting deeper than ``MAX_YAML_DEPTH`` and documents
    whose aliases expand to more than ``MAX_YAML_NODES`` values (an "alias bomb") are refused before
    anything is built, and a key must be a plain value (a list or mapping used as a key is refused).
    Merge keys (``<<: *defaults``) are accepted: the explicit keys of the mapping win over merged ones,
    and a key written twice explicitly is still an error.
    """

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _check_expanded_size(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                what = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
                raise yaml.constructor.ConstructorError(
                    None, None, f"a {what} cannot be a key (keys are plain names)", key_node.start_mark
                )
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


#: Deepest nesting a config may have (the deepest real path, margin.brackets.SYM[i].key, is 5).
MAX_YAML_DEPTH = 32
#: Most values a config may expand to once aliases are followed (the shipped files hold a few hundred).
MAX_YAML_NODES = 100_000
#: Longest config file, in characters (the shipped files are a few kB).
MAX_CONFIG_CHARS = 1_000_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_expanded_size(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand past ``MAX_YAML_NODES`` values or ``MAX_YAML_DEPTH`` levels.

    The composed graph shares aliased nodes, so it is small even when its expansion is astronomically
    large; the expanded size is counted per distinct node (memoised), so this costs one pass over it.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            open_nodes.discard(key)
            if size[key] > MAX_YAML_NODES or depth[key] > MAX_YAML_DEPTH:
                limit = (
                    f"more than {MAX_YAML_NODES:,} values"
                    if size[key] > MAX_YAML_NODES
                    else f"more than {MAX_YAML_DEPTH} levels"
                )
                raise yaml.composer.ComposerError(
                    None, None, f"aliases expand to {limit} (an alias bomb?)", node.start_mark
                )
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise yaml.composer.ComposerError(
                None, None, "an alias refers to a node that contains it (recursive alias)", node.start_mark
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


# YAML 1.2 core-schema floats PyYAML's 1.1 resolver misses: an exponent without a dot or without a sign
# (1e9, -2E-3, 1.5e9, .5e3). Forms 1.1 already knows (1.5e+9, 0.1) resolve as before.
_YAML12_EXP_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_EXP_FLOAT, list("-+.0123456789"))


def _parse_override(text: str, option: str = "--set") -> tuple[tuple[str, ...], Any]:
    """``grid.grid_step_bps=30`` -> (("grid", "grid_step_bps"), 30); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    keys = tuple(part.strip() for part in key.split("."))
    if len(keys) == 4 and keys[0] == "symbol_overrides":  # symbol_overrides.<SYMBOL>.section.key: as the
        keys = (keys[0], keys[1], f"{keys[2]}.{keys[3]}")  # file holds it (ccxt symbols have no dot)
    if not sep or not all(keys):
        raise GridctlError(f"{option} {text}: expected SECTION.KEY=VALUE, e.g. grid.grid_step_bps=30")
    try:
        value = yaml.load(raw, Loader=_StrictLoader) if raw.strip() else None
    except yaml.YAMLError as err:
        raise GridctlError(f"{option} {text}: value is not valid YAML{_yaml_problem(err)}") from None
    return keys, value


def _apply_override(tree: dict[str, Any], keys: tuple[str, ...], value: Any, given: str) -> None:
    """Write ``value`` at ``keys``; ``given`` is the override as typed (``--set k=v``) for messages."""
    node = tree
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise GridctlError(f"{given}: {'.'.join(keys[: depth + 1])} is a value, not a section")
        node = child
    node[keys[-1]] = value


# ----------------------------------------------------------------------------------------------------
# Error messages
# ----------------------------------------------------------------------------------------------------


def _key_paths(tree: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every key path present in a parsed YAML mapping (to tell file keys from ``--set`` keys)."""
    if not isinstance(tree, dict):
        return set()
    out: set[tuple[str, ...]] = set()
    for key, value in tree.items():
        path = (*prefix, key)
        out.add(path)
        out |= _key_paths(value, path)
    return out


def _source_of(
    loc: tuple[Any, ...],
    set_paths: dict[tuple[str, ...], str],
    from_file: set[tuple[str, ...]],
    option: str = "--set",
) -> str:
    """``--set ...: `` when an override wrote (or created) the key at ``loc``, else "" (the file)."""
    for keys, text in set_paths.items():
        if loc[: len(keys)] == keys or (keys[: len(loc)] == loc and loc not in from_file):
            return f"{option} {text}: "
    return ""


def _format_errors(
    err: ValidationError,
    kind: Kind,
    model: type[BaseModel],
    where: str,
    set_paths: dict[tuple[str, ...], str],
    from_file: set[tuple[str, ...]],
    option: str = "--set",
) -> str:
    lines = []
    for item in err.errors():
        loc = tuple(item["loc"])
        rule = (item.get("ctx") or {}).get("error")
        if isinstance(rule, FieldRuleError):
            loc = loc + tuple(rule.field.split("."))
            reason = str(rule)
        elif item["type"] == "extra_forbidden":
            reason = _unknown_key_reason(kind, model, loc)
        elif item["type"] == "missing":
            reason = "required field is missing"
        else:
            reason = item["msg"].removeprefix("Value error, ")
            if not _is_secret(loc):
                reason += f" (got {_short(item['input'])})"
        source = _source_of(loc, set_paths, from_file, option)
        lines.append(f"  {source}{_loc_text(loc) or '(top level)'}: {reason}")
    if len(lines) == 1:  # one problem: one line
        return f"invalid {kind} config {where}: {lines[0].strip()}"
    return "\n".join([f"invalid {kind} config {where}: {len(lines)} problems", *lines])


def _unknown_key_reason(kind: Kind, model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Explain an unknown key: the section it belongs under, or the closest valid spelling."""
    name = str(loc[-1])
    parent = _model_at(model, loc[:-1])
    here = list(parent.model_fields) if parent is not None else []
    everywhere = _field_paths(model)
    homes = [p for p in everywhere if p.rsplit(".", 1)[-1] == name and tuple(p.split(".")) != loc]
    if homes:
        return f"unknown key here; it belongs under {' or '.join(_section_of(p) for p in homes)} ({homes[0]})"
    close = difflib.get_close_matches(name, here, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {_loc_text((*loc[:-1], close[0]))!r}?"
    other: Kind = "venue" if kind == "strategy" else "strategy"
    if len(loc) == 1 and name in MODELS[other].model_fields:
        return f"unknown key; {name!r} is a section of a {other} config, not a {kind} config"
    anywhere = difflib.get_close_matches(name, [p.rsplit(".", 1)[-1] for p in everywhere], n=1, cutoff=0.75)
    if anywhere:
        path = next(p for p in everywhere if p.rsplit(".", 1)[-1] == anywhere[0])
        return f"unknown key; did you mean {path!r}?"
    return f"unknown key; valid keys here: {', '.join(here)}"


def _section_of(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else "the top level"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section model found by following ``loc`` from ``model`` (through Optional/list/dict)."""
    current: Any = model
    for part in loc:
        current = unwrap_optional(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) in (list, dict):
            current = get_args(current)[-1]
        else:
            return None
    current = unwrap_optional(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def unwrap_optional(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every section and field path of a config model, e.g. ``grid``, ``grid.grid_step_bps``."""
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        inner = unwrap_optional(field.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            paths.extend(_field_paths(inner, f"{path}."))
    return paths


def _loc_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _is_secret(loc: tuple[Any, ...]) -> bool:
    return _loc_text(loc) in secrets.CREDENTIAL_PATHS


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
