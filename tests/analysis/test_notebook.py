"""notebooks/01_compare_runs.ipynb runs top to bottom, headless, on two micro runs (full and APEX)."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.support.micro_runs import micro_runs
from tests.support.runs import ROOT

pytestmark = pytest.mark.slow  # executes the notebook on the shared micro runs


def test_compare_runs_notebook_executes(monkeypatch) -> None:  # noqa: ANN001 - pytest fixture
    runs = micro_runs()
    monkeypatch.setenv("APEXLM_RUN_DIRS", os.pathsep.join(str(runs[k]) for k in ("full", "apex")))
    nb = nbformat.read(ROOT / "notebooks" / "01_compare_runs.ipynb", as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3                                  # loss/ppl, per-domain ppl + exact match, erank
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "2 run(s)" in text and "apex" in text and "full" in text
