"""The first run's compile on two cores: a helper process compiles the fill path meanwhile.

numba compiles on one thread, and a cold ``run_bars_nb`` compiles every kernel the bar step calls.
Two groups of them do not call each other: the simulated venue's fill path (``_detail_path_nb``,
``_path_nb``, ``_points_margin_check_nb``) and the decision and gate kernels. On a cold cache
``start`` launches ``python -m gridctl.engine.compile_ahead``, which compiles the fill path for the very
signatures the bar step calls it with and saves it to numba's on-disk cache; this process compiles
the decision kernels meanwhile, waits for the helper (``CompileAhead.finish``), and then compiles
``run_bars_nb``, which loads the fill path from that cache instead of compiling it again.

It only ever saves time: if the helper cannot start, fails or is slow, this process compiles what is
missing itself (numba's cache is keyed by signature, so nothing wrong is ever loaded). The signatures
come from ``step_nb``'s own source, its path step ``bar_path_nb``'s and the fill path entry points'
(``ENTRY_POINTS``): each call's arguments are names of their parameters (typed like the run's
arguments, the engine/contexts.py groups included), fields of those groups (``bars.reg``,
``sim.st``) or names of the step's few scalar locals (``STEP_LOCALS``).
``GRIDCTL_COMPILE_AHEAD=0`` turns it off.
"""

from __future__ import annotations

import ast
import atexit
import inspect
import os
import pickle
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from typing import Any

from numba.core import types

from gridctl.engine.numba_compat import argument_type

#: Kernels the helper process compiles, by module: the simulated venue's fill path (the kernels its
#: entry points ``detail_path_nb``, ``path_nb`` and ``points_margin_check_nb`` call; those entry
#: points and ``bar_path_nb`` are ``inline_kernel``s, inlined into the bar step, never compiled alone).
HELPER_KERNELS = (
    ("gridctl.engine.fills", "_detail_path_nb"),
    ("gridctl.engine.fills", "_path_nb"),
    ("gridctl.engine.fills", "_points_margin_check_nb"),
)
#: The inlined entry points, by module, whose own calls (on their groups' fields) give the helper's
#: signatures.
ENTRY_POINTS = (
    ("gridctl.engine.fills", "detail_path_nb"),
    ("gridctl.engine.fills", "path_nb"),
    ("gridctl.engine.fills", "points_margin_check_nb"),
)
#: Kernels this process compiles while the helper runs.
LOCAL_KERNELS = (
    ("gridctl.engine.step", "bar_open_nb"),
    ("gridctl.engine.step", "bar_close_nb"),
)
#: Types of ``step_nb``'s scalar locals that it passes to those kernels.
STEP_LOCALS = {
    "k": types.int64,
    "t": types.int64,
    "o": types.float64,
    "h": types.float64,
    "lw": types.float64,
    "c": types.float64,
    "allow": types.boolean,
    "dlw": types.float64,
    "dh": types.float64,
    "j0": types.int64,
    "j1": types.int64,
}
#: Longest wait for the helper before this process compiles the rest itself.
HELPER_TIMEOUT_S = 600.0


def _kernel(module: str, name: str) -> Any:
    return getattr(__import__(module, fromlist=[name]), name)


def _arg_type(arg: ast.expr, typed: dict[str, Any]) -> Any:
    """The type of a call argument that is a typed name or a field of a typed group (``bars.reg``,
    engine/contexts.py); None for anything else."""
    if isinstance(arg, ast.Name):
        return typed.get(arg.id)
    if isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name):
        group = typed.get(arg.value.id)
        fields = getattr(group, "fields", ())
        if arg.attr in fields:
            return group.types[fields.index(arg.attr)]
    return None


def _calls(fn: Any, typed: dict[str, Any], sigs: dict[str, tuple]) -> None:
    """Add ``{kernel name: argument types}`` of each call in ``fn``'s source whose arguments are all
    typed names or fields of typed groups."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn.py_func)))
    for node in ast.walk(tree):
        plain = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords
        if plain and node.args:
            arg_types = tuple(_arg_type(a, typed) for a in node.args)
            if all(t is not None for t in arg_types):
                sigs.setdefault(node.func.id, arg_types)


def _callee_calls(fn: Any, sigs: dict[str, tuple], scalars: dict[str, Any]) -> None:
    """``_calls`` of ``fn`` (called with ``sigs[its name]``), its parameters typed as so called."""
    params = list(inspect.signature(fn.py_func).parameters)
    typed = dict(zip(params, sigs[fn.py_func.__name__], strict=True))
    typed.update(scalars)
    _calls(fn, typed, sigs)


def step_call_signatures(run_bars_args: tuple) -> dict[str, tuple]:
    """``{kernel name: argument types}`` of every call ``step_nb`` makes with plain names as arguments,
    of those its path step ``bar_path_nb`` makes (typed as ``step_nb`` calls it), and of those the fill
    path's entry points make (``ENTRY_POINTS``, typed as ``bar_path_nb`` calls them)."""
    from gridctl.engine.step import bar_path_nb, run_bars_nb, step_nb

    loop_params = list(inspect.signature(run_bars_nb.py_func).parameters)
    typed = {n: argument_type(a) for n, a in zip(loop_params, run_bars_args, strict=True)}
    typed.update(STEP_LOCALS)
    sigs: dict[str, tuple] = {}
    _calls(step_nb, typed, sigs)
    if "bar_path_nb" in sigs:
        _callee_calls(bar_path_nb, sigs, STEP_LOCALS)
        for module, name in ENTRY_POINTS:
            if name in sigs:
                _callee_calls(_kernel(module, name), sigs, {})
    return sigs


@dataclass
class CompileAhead:
    """A started helper process and the signatures both sides compile."""

    helper: subprocess.Popen | None
    local: list[tuple[str, str, tuple]]
    remote: list[tuple[str, str, tuple]]

    def finish(self) -> dict[str, Any]:
        """Compile this process's group, then wait for the helper's; returns what happened."""
        for module, name, sig in self.local:
            _kernel(module, name).compile(sig)
        code: int | None = None
        if self.helper is not None:
            try:
                code = self.helper.wait(timeout=HELPER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.helper.kill()
                self.helper.wait()
        return {
            "helper_exit": code,
            "local": [n for _, n, _ in self.local],
            "helper": [n for _, n, _ in self.remote],
        }

    def abandon(self) -> None:
        """Stop the helper (the run was interrupted)."""
        if self.helper is not None and self.helper.poll() is None:
            self.helper.kill()
            self.helper.wait()


#: Helpers started ahead of their run (``start(..., early=True)``), by ``run_bars_nb`` signature.
_EARLY: dict[tuple, CompileAhead] = {}


@atexit.register
def _stop_early_helpers() -> None:
    """A run that never came (bad data, an error before it): stop its helper with this process."""
    for ahead in _EARLY.values():
        ahead.abandon()
    _EARLY.clear()


def start(run_bars_args: tuple, early: bool = False) -> CompileAhead | None:
    """Launch the helper for this run's signatures; None when turned off or on a single core.

    ``early``: started before the run's market is loaded (``engine.run.compile_early``); the run's own
    ``start`` for the same signature then takes that helper over instead of launching another.
    """
    if os.environ.get("GRIDCTL_COMPILE_AHEAD", "1") == "0" or (os.cpu_count() or 1) < 2:
        return None
    key = tuple(argument_type(a) for a in run_bars_args)
    if key in _EARLY:
        return None if early else _EARLY.pop(key)
    sigs = step_call_signatures(run_bars_args)
    remote = [(m, n, sigs[n]) for m, n in HELPER_KERNELS if n in sigs]
    local = [(m, n, sigs[n]) for m, n in LOCAL_KERNELS if n in sigs]
    try:
        # The helper imports gridctl as this process does (installed, or the caller's PYTHONPATH); the
        # package's own folder is never put on its path, where engine/, data/ ... would be top-level.
        helper = subprocess.Popen(
            [sys.executable, "-m", "gridctl.engine.compile_ahead"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert helper.stdin is not None
        helper.stdin.write(pickle.dumps(remote))
        helper.stdin.close()
    except OSError:
        helper = None
    ahead = CompileAhead(helper=helper, local=local, remote=remote)
    if early:
        _EARLY[key] = ahead
    return ahead


def _main() -> None:
    """Helper process: compile (and so cache) the kernels named on stdin for their signatures."""
    for module, name, sig in pickle.loads(sys.stdin.buffer.read()):
        _kernel(module, name).compile(sig)


if __name__ == "__main__":
    _main()
