"""`gridctl study notebook`: the packaged study-analysis notebook, executed on one study by name.

The notebook ships inside the package (``gridctl/research/notebooks/study_analysis.ipynb``, package data),
so an installed gridctl finds it with no checkout. Executing it needs a Jupyter kernel: nbclient,
nbformat and ipykernel, the optional extra ``notebook`` (``pip install 'gridctl[notebook]'``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from gridctl.configs.errors import GridctlError
from gridctl.research.options import REPORT_TOP

NOTEBOOK = "study_analysis.ipynb"
#: What an execution may take at most (fresh backtests of the top trials and DSR/PBO re-runs included).
TIMEOUT_S = 3600


def notebook_path() -> Path:
    """Where the installed package keeps the study-analysis notebook."""
    path = Path(str(resources.files("gridctl.research").joinpath("notebooks", NOTEBOOK)))
    if not path.is_file():
        raise GridctlError(f"the packaged notebook {path} is missing (reinstall gridctl)")
    return path


@contextlib.contextmanager
def _environment(values: dict[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) environment variables for the kernel, restoring them afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_notebook_out(out: Path, force: bool) -> None:
    """Refuse an ``--out`` that is a folder, or an existing file without ``force``."""
    if out.is_dir():
        raise GridctlError(f"--out {out} is a directory; give a file name like study.ipynb")
    if out.exists() and not force:
        raise GridctlError(f"--out {out} already exists; add --force to replace it")
    if out.suffix != ".ipynb":
        raise GridctlError(f"--out {out}: a notebook file name ends in .ipynb")


def run_notebook(
    study_name: str,
    out: Path,
    studies_dir: Path | None = None,
    storage: str | None = None,
    data_dir: Path | None = None,
    top_k: int = REPORT_TOP,
    force: bool = False,
) -> Path:
    """Execute the packaged notebook on study ``study_name`` and write the executed copy to ``out``."""
    from gridctl.data.atomic import atomic_write_text
    from gridctl.research.studies import load_study

    out = Path(out)
    check_notebook_out(out, force)
    load_study(study_name, studies_dir, storage)  # a wrong name or storage fails here, not in a kernel
    try:
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError
    except ImportError as err:
        raise GridctlError(
            f"gridctl study notebook needs a Jupyter kernel ({err.name} is missing): "
            "pip install 'gridctl[notebook]'"
        ) from None
    nb = nbformat.read(notebook_path(), as_version=4)
    # None removes a variable: the study is the one loaded above, from --storage or the studies dir.
    env: dict[str, str | None] = {
        "GRIDCTL_STUDY_NAME": study_name,
        "GRIDCTL_STUDY_STORAGE": storage,
        "GRIDCTL_STUDY_JOURNAL": None,
        "GRIDCTL_TOP_K": str(top_k),
    }
    if studies_dir is not None:  # else the kernel inherits this process's GRIDCTL_STUDIES_DIR default
        env["GRIDCTL_STUDIES_DIR"] = str(Path(studies_dir).resolve())
    if data_dir is not None:
        env["GRIDCTL_DATA_DIR"] = str(Path(data_dir).resolve())
    out.parent.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(
        nb, timeout=TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(out.parent)}}
    )
    with _environment(env):
        try:
            client.execute()
        except CellExecutionError as err:
            last = [line for line in str(err).strip().splitlines() if line.strip()]
            raise GridctlError(
                f"the notebook failed on study {study_name!r}: {last[-1] if last else err}"
            ) from None
    atomic_write_text(out, nbformat.writes(nb))
    return out
