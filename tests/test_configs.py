"""Every config group option and every experiment composes and resolves; every experiment passes the pre-flight
validation of `train.py`; every one-knob APEX ablation (apex_it_*) is built on the micro model and stays
function-preserving."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from apexlm.methods import build_method
from apexlm.models.builders import build_model
from apexlm.models.tokenizer import load_run_tokenizer
from apexlm.training.validate import validate_config
from tests.support.models import batches, logits, rel
from tests.support.runs import CONFIG_DIR, MICRO, compose_cfg

GROUPS = ["model", "data", "method", "trainer", "logger", "callbacks", "debug", "eval", "paths"]
REQUIRED = {"model=hf": ["model.pretrained=some/model"], "data=text_files": ["data.path=/tmp/x"],
            "data=jsonl_messages": ["data.path=/tmp/x.jsonl"], "data=hf_text": ["data.hf_id=x"],
            "data=hf_messages": ["data.hf_id=x"]}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


EXPERIMENTS = _options("experiment")
ABLATIONS = [e for e in EXPERIMENTS if e.startswith("apex_it_")]
CASES = [f"{g}={o}" for g in GROUPS for o in _options(g)] + \
        [f"experiment={o}" for o in EXPERIMENTS] + \
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


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_passes_validation(experiment: str, tmp_path: Path) -> None:
    """The composed experiment, as `python train.py experiment=<e>` would check it before training."""
    cfg = compose_cfg([f"experiment={experiment}"], run_dir=tmp_path)
    ref = cfg.model.get("pretrained")
    if ref and cfg.model.kind == "tiny" and not Path(str(ref)).exists():
        with open_dict(cfg):  # no tiny base built here (make base): check its architecture, as a fresh model
            cfg.model.pretrained = None
    if cfg.get("export_to"):
        with open_dict(cfg):  # pretrain_tiny exports to data/base/tiny, which `make base` may have built
            cfg.export_to = str(tmp_path / "export")
    validate_config(cfg)


def test_validation_is_not_vacuous(tmp_path: Path) -> None:
    """The same check refuses a broken experiment (so the test above can fail)."""
    from apexlm.errors import UserError

    cfg = compose_cfg(["experiment=apex_it", "model.pretrained=null", "method.k_ratio=0.75"], run_dir=tmp_path)
    with pytest.raises(UserError, match="k_ratio"):
        validate_config(cfg)


@pytest.mark.parametrize("experiment", ABLATIONS)
def test_ablation_builds_on_the_micro_model(experiment: str, tmp_path: Path) -> None:
    """Compose + validate + build the model + method.prepare (assessment pass included) + one forward. That each
    file changes exactly one knob of apex_it: tests/sweeps/test_sweep_jobs.py."""
    cfg = compose_cfg([f"experiment={experiment}", *MICRO, "threads=1"], run_dir=tmp_path)
    validate_config(cfg)
    torch.manual_seed(int(cfg.seed))
    model = build_model(cfg.model, load_run_tokenizer(cfg))
    plain = copy.deepcopy(model).eval()
    method = build_method(cfg.method, seed=int(cfg.seed))
    model = method.prepare(model, assess_batches=batches(2, batch=4, length=16))
    trainable = [p for p in model.parameters() if p.requires_grad]
    grouped = [p for g in method.param_groups(model, 1e-3, 0.0) for p in g["params"]]
    assert trainable and len({id(p) for p in grouped}) == len(grouped) == len(trainable)  # each once
    inputs = batches(1, seed=7)[0]
    got, want = logits(model.eval(), inputs), logits(plain, inputs)  # (2, 12, vocab)
    assert torch.isfinite(got).all()
    err = rel(want, got)
    if cfg.method.init == "noise":  # operators start near, not at, the identity (method §3)
        assert 0 < err < 0.05, err
    else:
        assert err <= 1e-5, err
