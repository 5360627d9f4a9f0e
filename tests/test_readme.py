"""The README's library snippet runs as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.support.runs import ROOT


def test_readme_apex_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## APEX in your own training loop", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "apex_out" / "config.json").exists()
    assert any(name.endswith(".safetensors") for name in os.listdir(tmp_path / "apex_out"))
