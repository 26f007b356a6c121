"""research/notebooks/study_analysis.ipynb runs headless, top to bottom, on a real study, so it never rots.

The test writes a sample market and a multi-objective study (journal file) into a temp dir, points the
notebook's parameters at them through the GRIDCTL_* environment variables it reads, and executes it
in a fresh IPython kernel (nbclient + ipykernel).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import optuna
import pytest
from nbclient import NotebookClient

from gridctl.research.study_report import open_study, overfitting, top_trials

from study_builders import build_study, sample_market

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "research" / "notebooks" / "study_analysis.ipynb"
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def test_notebook_is_saved_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    # The first code cell holds the parameters (tagged for papermill-style tools too).
    assert "parameters" in code[0].metadata.get("tags", [])


def test_notebook_runs_on_a_real_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    data_dir = tmp_path / "data"
    market = sample_market(data_dir)
    journal = tmp_path / "nb.journal"
    build_study(market, 12, storage=JournalStorage(JournalFileBackend(str(journal))), name="nb", multi=True)
    study = open_study("nb", journal=journal)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)  # a failed trial is counted apart
    study = open_study("nb", journal=journal)
    for key, value in {
        "GRIDCTL_STUDY_NAME": "nb",
        "GRIDCTL_STUDY_JOURNAL": str(journal),
        "GRIDCTL_DATA_DIR": str(data_dir),
        "GRIDCTL_TOP_K": "3",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("GRIDCTL_STUDY_STORAGE", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # the first lines say what the study holds, by state (as `gridctl study show` counts them)
    said = "".join(o.text for o in outputs if o.output_type == "stream")
    assert "study nb: 13 trials (12 complete, 1 fail); objectives" in said
    figures = [
        o.data[PLOTLY_MIME] for o in outputs if o.output_type == "display_data" and PLOTLY_MIME in o.data
    ]
    last = json.loads(nb.cells[-1].outputs[-1].text.strip().splitlines()[-1])
    want = [
        "history-0",
        "history-1",
        "importance-0",
        "importance-1",
        "parallel",
        "pareto",
        "equity",
        "is-oos",
    ]
    assert last["figures"] == want and len(figures) == len(want)
    # The equity chart re-ran the top 3 trials, one curve each, in rank order.
    equity = figures[want.index("equity")]
    assert [t["name"] for t in equity["data"]] == [f"trial {t.number}" for t in top_trials(study, 3)]
    # The Pareto chart shows every trial; the DSR / PBO are the library's for this study.
    pareto = figures[want.index("pareto")]
    assert sum(len(t["x"]) for t in pareto["data"] if isinstance(t.get("x"), list)) == 12
    assert last["overfitting"] == json.loads(json.dumps(overfitting(study)))
    assert 0.0 <= last["overfitting"]["pbo"] <= 1.0


def test_the_built_package_ships_the_notebook_and_finds_it_where_it_is_installed(tmp_path: Path) -> None:
    # setuptools builds the package from a copy of the checkout (build_py: the files an install puts
    # in site-packages, package data included); a fresh interpreter that sees only that build finds
    # the notebook inside it, not in a checkout.
    import shutil
    import subprocess
    import sys

    src = tmp_path / "src"
    junk = (".git", "__pycache__", "*.nbi", "*.nbc", ".pytest_cache", ".ruff_cache", ".hypothesis", ".venv")
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*junk, "build", "dist", "out"))
    lib = tmp_path / "lib"
    # The interpreter's own setuptools builds it; one older than 77 cannot read PEP 639 license strings,
    # so the copy then states the same license the older way.
    script = (
        "import sys, pathlib, setuptools\n"
        "if int(setuptools.__version__.split('.')[0]) < 77:\n"
        "    p = pathlib.Path('pyproject.toml')\n"
        "    p.write_text(p.read_text().replace('license = \"MIT\"', 'license = {text = \"MIT\"}'))\n"
        f"sys.argv = ['setup.py', '-q', 'build_py', '--build-lib', {str(lib)!r}]\n"
        "setuptools.setup()\n"
    )
    build = subprocess.run(
        [sys.executable, "-c", script], cwd=src, capture_output=True, text=True, timeout=300, check=False
    )
    assert build.returncode == 0, build.stderr
    shipped = lib / "gridctl" / "research" / "notebooks" / "study_analysis.ipynb"
    assert shipped.read_bytes() == NOTEBOOK.read_bytes()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(lib)
    found = subprocess.run(
        [sys.executable, "-c", "from gridctl.research.notebook import notebook_path; print(notebook_path())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == shipped
