"""The job lists of the studies in configs/hparams_search/, expanded the way Hydra's basic sweeper expands them,
and the configs those jobs compose to: controls present, arms complete, experiments matched to their family."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from tests.support.runs import CONFIG_DIR

STUDY_JOBS = {"methods_it": 30, "methods_cpt": 15, "apex_k_sweep": 18, "apex_stage_sweep": 36,
              "apex_mixer_lr_sweep_it": 36, "apex_mixer_lr_sweep_cpt": 36}
MIXERS, STAGE_LRS, SEEDS = (1, 3, 10, 30, 100), ("restart", "continue"), (1, 2, 3)
SCHEDULE = ("stages", "stage_steps", "stage_lr", "stage_optimizer_reset")


def _compose(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def sweep_jobs(study: str, cli: list[str] | None = None) -> list[list[str]]:
    """Each job's overrides, as BasicSweeper.sweep builds them (config params first, command-line sweeps after)."""
    params = _compose([f"hparams_search={study}"]).hydra.sweeper.params
    args = [f"{k}={v}" for k, v in params.items()] + list(cli or [])
    overrides = OverridesParser.create().parse_overrides(args)
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def _job_cfg(study: str, job: list[str]) -> DictConfig:
    return _compose([f"hparams_search={study}", *job])


def _arm(job: list[str]) -> str:
    return next(o.split("=", 1)[1] for o in job if o.startswith("+hparams_search/mixer_arm="))


def test_every_study_has_a_header_and_expected_job_count() -> None:
    studies = sorted(p.stem for p in (Path(CONFIG_DIR) / "hparams_search").glob("*.yaml"))
    assert studies == sorted(STUDY_JOBS)
    for study, count in STUDY_JOBS.items():
        head = (Path(CONFIG_DIR) / "hparams_search" / f"{study}.yaml").read_text().splitlines()[:10]
        assert head[0] == "# @package _global_" and any("Question" in h for h in head)
        assert any(f"python train.py -m hparams_search={study}" in h for h in head)
        jobs = sweep_jobs(study)
        assert len(jobs) == count, study
        assert len({tuple(j) for j in jobs}) == count, f"{study} has duplicate jobs"
        assert Counter(o for j in jobs for o in j if o.startswith("seed="))["seed=1"] == count // 3


@pytest.mark.parametrize("family", ["it", "cpt"])
def test_mixer_sweep_holds_controls_and_every_arm(family: str) -> None:
    study = f"apex_mixer_lr_sweep_{family}"
    jobs = sweep_jobs(study)
    arms = Counter(_arm(j) for j in jobs)
    controls = {f"full_{family}", f"full_restart_{family}"}
    expected = controls | {f"x{m}_{lr}" for m in MIXERS for lr in STAGE_LRS}
    assert set(arms) == expected and set(arms.values()) == {3}
    assert {(_arm(j), next(o for o in j if o.startswith("seed="))) for j in jobs} == \
        {(a, f"seed={s}") for a in expected for s in SEEDS}

    apex_ref = _compose([f"experiment=apex_{family}"])
    for arm in expected - controls:  # every APEX arm file sets exactly the two knobs its name says
        knobs = OmegaConf.load(Path(CONFIG_DIR) / "hparams_search" / "mixer_arm" / f"{arm}.yaml")
        assert OmegaConf.to_container(knobs) == {"method": {"mixer_lr_scale": int(arm[1:].split("_")[0]),
                                                            "stage_lr": arm.split("_")[1]}}
    # Composing costs ~0.2 s CPU each: the controls and the two extreme APEX arms cover both kinds of arm.
    # One seed is enough: the seed only sets cfg.seed.
    for arm in sorted(controls) + ["x1_restart", "x100_continue"]:
        cfg = _job_cfg(study, [f"+hparams_search/mixer_arm={arm}", "seed=2"])
        assert cfg.experiment_name == study and cfg.seed == 2  # W&B group = the study
        if arm in controls:  # a control arm is exactly its standalone experiment
            ref = _compose([f"experiment={arm}"])
            assert cfg.hydra.runtime.choices.experiment == arm
            for key in ("method", "data", "optim", "trainer", "model"):
                assert cfg[key] == ref[key], (arm, key)
        else:  # an APEX arm is apex_<family> with two knobs changed
            mixer, stage_lr = arm[1:].split("_")
            assert cfg.method.name == "apex" and cfg.method.mixer_lr_scale == float(mixer)
            assert cfg.method.stage_lr == stage_lr
            rest = {k: v for k, v in OmegaConf.to_container(cfg.method).items()
                    if k not in ("mixer_lr_scale", "stage_lr")}
            assert rest == {k: v for k, v in OmegaConf.to_container(apex_ref.method).items() if k in rest}
            assert cfg.data == apex_ref.data and cfg.trainer == apex_ref.trainer


def test_command_line_can_narrow_a_study_and_debug_still_applies() -> None:
    jobs = sweep_jobs("apex_mixer_lr_sweep_it", ["+hparams_search/mixer_arm=full_it,x30_restart", "seed=1,2"])
    assert len(jobs) == 4
    cfg = _job_cfg("apex_mixer_lr_sweep_it", [*jobs[-1], "debug=fdr"])
    assert cfg.trainer.max_steps == 4 and cfg.method.mixer_lr_scale == 30


def test_method_studies_list_every_method_experiment() -> None:
    exps = {o.split("=", 1)[1] for j in sweep_jobs("methods_it") for o in j if o.startswith("experiment=")}
    on_disk = {p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*_it.yaml")}
    assert exps == on_disk
    exps = {o.split("=", 1)[1] for j in sweep_jobs("methods_cpt") for o in j if o.startswith("experiment=")}
    assert exps == {p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*_cpt.yaml")}


@pytest.mark.parametrize("family", ["it", "cpt"])
def test_restart_only_control_matches_apex_schedule(family: str) -> None:
    apex, ctrl = _compose([f"experiment=apex_{family}"]), _compose([f"experiment=full_restart_{family}"])
    assert ctrl.method.name == "full" and ctrl.method.stages > 1 and ctrl.method.stage_lr == "restart"
    for key in SCHEDULE:
        assert ctrl.method[key] == apex.method[key], key
    assert ctrl.data == apex.data and ctrl.trainer == apex.trainer and ctrl.optim == apex.optim


@pytest.mark.slow  # composes every *_it and *_cpt experiment
def test_method_experiments_are_matched_to_their_family() -> None:
    exp_dir = Path(CONFIG_DIR) / "experiment"
    for family in ("it", "cpt"):
        ref = _compose([f"experiment=full_{family}"])
        for path in sorted(exp_dir.glob(f"*_{family}.yaml")):
            cfg = _compose([f"experiment={path.stem}"])
            assert cfg.experiment_name == path.stem
            assert (cfg.data, cfg.trainer, cfg.optim, cfg.model) == (ref.data, ref.trainer, ref.optim, ref.model), \
                path.stem


def test_apex_it_ablations_change_one_knob() -> None:
    ref = _compose(["experiment=apex_it"])
    forced_second = {"apex_it_k_ratio_0.25": {"tuned_ffn_ratio"}}  # tuned ratios must stay >= 2k
    names = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("apex_it_*.yaml"))
    assert len(names) == 18
    for name in names:
        cfg = _compose([f"experiment={name}"])
        assert cfg.experiment_name == name
        for key in ("data", "trainer", "optim", "model"):
            assert cfg[key] == ref[key], (name, key)
        changed = {k for k in ref.method if cfg.method[k] != ref.method[k]}
        assert len(changed - forced_second.get(name, set())) == 1, (name, changed)


def test_slurm_launcher_composes() -> None:
    cfg = _compose(["hparams_search=methods_cpt", "hydra/launcher=slurm"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1 and launcher.timeout_min > 0
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "slurm"
