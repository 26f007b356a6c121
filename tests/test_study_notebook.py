"""research/notebooks/study_analysis.ipynb runs headless, top to bottom, on a real study, so it never rots.

The test writes a sample market and a multi-objective study (journal file) into a temp dir, points the
notebook's parameters at them through the GRIDCTL_* environment variables it reads, and executes it
in a fresh IPython kernel (nbclient + ipykernel).
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from gridctl.research.study_report import open_study, overfitting, top_trials

from study_builders import build_study, sample_market

REPO = Path(__file__).resolve().parents[1]
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
