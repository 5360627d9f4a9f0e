"""Run the real pipeline on the micro model: compose the Hydra configs as `train.py` does, run in-process
(optionally with extra Lightning callbacks), or run `python train.py` as a subprocess (one, or many at once).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from tests.support.models import MICRO_SHAPE

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = str(ROOT / "configs")
DATA_DIR = Path(os.environ.get("APEXLM_DATA_DIR") or ROOT / "data").resolve()
os.environ.setdefault("APEXLM_ROOT", str(ROOT))
os.environ.setdefault("WANDB_MODE", "disabled")

# The micro model (tests.support.models.MICRO_SHAPE, fresh, no pretrained base) as Hydra overrides. One thread:
# at this size a second intra-op thread only adds synchronisation, and on a shared 2-core machine it is far slower.
MICRO = ["model.pretrained=null", *(f"model.{k}={v}" for k, v in MICRO_SHAPE.items()),
         "model.max_position_embeddings=256", "data.block_size=64", "threads=1"]


def compose_cfg(overrides: list[str], run_dir: Path | None = None, config_name: str = "train") -> DictConfig:
    """Compose like `train.py` would, with hydra.runtime.output_dir pointing at run_dir."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    if run_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
            cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run_in_process(overrides: list[str], run_dir: Path) -> dict:
    """Train one composed configuration in this process; returns its summary."""
    from apexlm.training.run import fit as fit_run

    cfg = compose_cfg(overrides, run_dir)
    return fit_run(cfg, run_dir)[0]


def fit(overrides: list[str], run_dir: Path, *callbacks: L.Callback) -> tuple[dict, Any]:
    """Run the real pipeline in-process with extra callbacks; returns (summary, module)."""
    from apexlm.training.run import fit as fit_run

    cfg = compose_cfg(overrides, run_dir)
    return fit_run(cfg, run_dir, callbacks=callbacks)


def weights(module: Any) -> dict[str, torch.Tensor]:
    """A copy of the trained module's model state dict."""
    return {k: v.detach().clone() for k, v in module.model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    """Same keys; bit-identical tensors (atol=0) or within atol."""
    assert a.keys() == b.keys()
    for k in a:
        if atol == 0.0:
            assert torch.equal(a[k], b[k]), (k, (a[k] - b[k]).abs().max().item())
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0.0, msg=lambda m, k=k: f"{k}: {m}")


# ---- `python train.py ...` ---------------------------------------------------------------------------------
def cli_env(cwd: Path, env: dict | None = None) -> dict[str, str]:
    """The environment of a CLI run: logs under cwd/logs, W&B off, warnings quiet (env overrides)."""
    return {**os.environ, "APEXLM_LOG_DIR": str(cwd / "logs"), "WANDB_MODE": "disabled",
            "PYTHONWARNINGS": "ignore", **(env or {})}


def train_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python train.py ARGS` in a subprocess with logs under cwd/logs."""
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True,
                          env=cli_env(cwd, env), cwd=cwd, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    """The `error: ...` lines a failing run printed."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# A fresh interpreter spends most of a failing `python train.py ...` importing torch/lightning/transformers.
# `cli_many` runs each case as its own process forked from a server that imported them once, and executes
# train.py exactly as `python train.py ARGS` would (runpy as __main__, same argv, env and cwd; exit status,
# stdout and stderr captured). APEXLM_FRESH_CLI=1 runs every case as a genuine subprocess instead.
PRELOAD = ["torch", "lightning", "transformers", "hydra", "apexlm.training.entry", "apexlm.training.run"]


def _cli_child(args: list[str], cwd: str, env: dict, out: str, err: str) -> None:
    import runpy
    import traceback

    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [str(ROOT / "train.py"), *args]
    code = 0
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - what the interpreter would do with an uncaught exception
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cli_many(cases: list[list[str]], cwds: list[Path], env: dict | None = None, parallel: int = 2,
             timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Run `python train.py ARGS` for every case (each in its own process); results in case order."""
    import multiprocessing as mp
    import time

    envs = [cli_env(c, env) for c in cwds]
    if os.environ.get("APEXLM_FRESH_CLI") == "1":
        return [subprocess.run([sys.executable, str(ROOT / "train.py"), *a], capture_output=True, text=True,
                               env=e, cwd=c, timeout=timeout) for a, c, e in zip(cases, cwds, envs, strict=True)]
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    results: list[subprocess.CompletedProcess | None] = [None] * len(cases)
    pending, running = list(range(len(cases))), {}
    deadline = time.monotonic() + timeout
    while pending or running:
        while pending and len(running) < parallel:
            i = pending.pop(0)
            out, err = cwds[i] / ".cli.out", cwds[i] / ".cli.err"
            p = ctx.Process(target=_cli_child, args=(cases[i], str(cwds[i]), envs[i], str(out), str(err)))
            p.start()
            running[i] = p
        for i, p in list(running.items()):
            p.join(timeout=0.05)
            if p.exitcode is None and time.monotonic() < deadline:
                continue
            if p.exitcode is None:
                p.kill()
                p.join()
            out, err = cwds[i] / ".cli.out", cwds[i] / ".cli.err"
            text = [f.read_text(errors="replace") if f.exists() else "" for f in (out, err)]
            results[i] = subprocess.CompletedProcess(cases[i], p.exitcode, *text)
            out.unlink(missing_ok=True)
            err.unlink(missing_ok=True)
            del running[i]
    return results  # type: ignore[return-value]
