"""Every config group option and every experiment composes and resolves."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.support.runs import CONFIG_DIR, compose_cfg

GROUPS = ["model", "data", "method", "trainer", "logger", "callbacks", "debug", "eval", "paths"]
REQUIRED = {"model=hf": ["model.pretrained=some/model"], "data=text_files": ["data.path=/tmp/x"],
            "data=jsonl_messages": ["data.path=/tmp/x.jsonl"], "data=hf_text": ["data.hf_id=x"],
            "data=hf_messages": ["data.hf_id=x"]}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


CASES = [f"{g}={o}" for g in GROUPS for o in _options(g)] + \
        [f"experiment={o}" for o in _options("experiment")] + \
        [f"hparams_search={o}" for o in _options("hparams_search")]


@pytest.mark.parametrize("override", CASES)
def test_composes(override: str, tmp_path: Path) -> None:
    extra = REQUIRED.get(override, [])
    cfg = compose_cfg([override, *extra], run_dir=tmp_path)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["method"]["name"]
    assert container["optim"]["lr"] > 0


def test_every_experiment_has_hypothesis_and_command() -> None:
    for path in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"):
        head = path.read_text().splitlines()[:8]
        assert head[0].strip() == "# @package _global_", path
        assert any("Hypothesis" in line for line in head), path
        assert any("python train.py" in line for line in head), path
