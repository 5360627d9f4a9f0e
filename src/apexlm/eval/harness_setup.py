"""Resolve and load lm-evaluation-harness tasks offline, failing with one line instead of hanging.

`load_harness_tasks(hs, metadata)` turns `eval.harness.tasks` + `eval.harness.suite` into loaded harness
tasks, BEFORE any model work, so that a bad name or missing data stops the evaluation in seconds:
  - an unknown task name is a ConfigError ("unknown harness task(s): …"), exit 2;
  - a task whose data is not on this machine is a DataError ("task data not available offline: …"), exit 2.
The hub is switched to offline mode while tasks load and run (`offline_hub`): without it the datasets
library retries an unreachable hub for ~20 s per task (measured: 23 s for one MMLU subject), which for a
suite of groups is a hang. A deadline (`eval.harness.load_timeout_s`) stops anything else that blocks.
Only the shipped tasks and `eval.harness.include_path` are indexed when they hold every requested name (fast);
otherwise the harness's whole registry (~14,700 names, 7-13 s on 2 busy cores) is indexed as well.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from apexlm.errors import ConfigError, DataError
from apexlm.eval.harness_tasks import TASKS_DIR, suite_tasks

log = logging.getLogger("apexlm")

HARNESS_DEFAULTS: dict[str, Any] = {
    "tasks": [], "suite": None, "include_path": None, "num_fewshot": None, "limit": None, "batch_size": None,
    "apply_chat_template": "auto", "offline": True, "load_timeout_s": 300, "allow_code_execution": False,
    "bootstrap_iters": 100000, "log_samples": True,
}
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE")


def harness_settings(ev: Mapping[str, Any]) -> dict[str, Any]:
    """`eval.harness` over the defaults."""
    given = ev.get("harness") or {}
    return {**HARNESS_DEFAULTS, **dict(given)}


def requested_tasks(hs: Mapping[str, Any]) -> list[str]:
    """`tasks` then the suite's tasks, without repeats, in order ([] = the harness is not run)."""
    tasks = hs.get("tasks") or []
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t]
    names = [str(t).strip() for t in tasks]
    if hs.get("suite"):
        names += suite_tasks(str(hs["suite"]))
    return list(dict.fromkeys(n for n in names if n))


def include_paths(hs: Mapping[str, Any]) -> list[Path]:
    """The shipped tasks folder, then the user's `include_path` folders (which must exist)."""
    given = hs.get("include_path") or []
    paths = [TASKS_DIR]
    for p in [given] if isinstance(given, str) else list(given):
        path = Path(str(p)).expanduser()
        if not path.is_dir():
            raise ConfigError(f"eval.harness.include_path={p} is not a folder; give a folder of task YAMLs")
        paths.append(path.resolve())
    return paths


@contextlib.contextmanager
def offline_hub(enabled: bool = True) -> Iterator[None]:
    """Make every hub access fail at once (env and the already-imported libraries' flags); restore after."""
    if not enabled:
        yield
        return
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved_env = {k: os.environ.get(k) for k in _OFFLINE_ENV}
    flags = [(hub_constants, "HF_HUB_OFFLINE"), (datasets.config, "HF_HUB_OFFLINE"),
             (datasets.config, "HF_DATASETS_OFFLINE")]
    saved_flags = [(mod, name, getattr(mod, name, None)) for mod, name in flags]
    os.environ.update({k: "1" for k in _OFFLINE_ENV})
    for mod, name in flags:
        setattr(mod, name, True)
    try:
        yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for mod, name, value in saved_flags:
            setattr(mod, name, value)


@contextlib.contextmanager
def deadline(seconds: float | None, what: str) -> Iterator[None]:
    """Raise DataError if the block runs longer than `seconds` (main thread only; elsewhere no limit)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
        raise DataError(f"task data not available offline: {what} did not load in {seconds:g} s "
                        "(is it trying the network?); check the task's dataset or raise "
                        "eval.harness.load_timeout_s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def quiet_harness(level: int = logging.ERROR) -> Iterator[None]:
    """Hold the harness's logger at `level` (indexing warns about every duplicate tag; loading repeats
    config notes), so that a failure prints our one line only."""
    logger = logging.getLogger("lm_eval")
    saved = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)


@functools.lru_cache(maxsize=16)
def _indexed(paths: tuple[str, ...], defaults: bool) -> Any:
    """A cached TaskManager index (indexing the whole registry takes seconds; tasks are built fresh)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(paths), include_defaults=defaults)


def _with_metadata(indexed: Any, metadata: Mapping[str, Any]) -> Any:
    """A copy of a cached manager whose tasks get `metadata` (lm-eval 0.4.13 keeps it in its factory)."""
    from lm_eval.tasks._factory import TaskFactory

    manager = copy.copy(indexed)
    manager._factory = TaskFactory(meta=dict(metadata))
    return manager


def task_manager(names: Sequence[str], paths: Sequence[Path], metadata: Mapping[str, Any]) -> Any:
    """A harness TaskManager that knows every name (ConfigError naming the unknown ones)."""
    key = tuple(str(p) for p in paths)
    with quiet_harness():
        indexed = _indexed(key, False)                  # shipped + include_path only: fast
        if any(n not in indexed.all_tasks for n in names):
            indexed = _indexed(key, True)               # + the harness's own registry
    manager = _with_metadata(indexed, metadata)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        import lm_eval

        raise ConfigError(f"unknown harness task(s): {', '.join(unknown)}; not in lm-eval {lm_eval.__version__}'s "
                          "registry nor in the shipped tasks or eval.harness.include_path (list the names "
                          "with `lm_eval ls tasks`; shipped: apexlm_rg, apexlm_mc and their apexlm_rg_<task>)")
    return manager


def _first_line(err: BaseException) -> str:
    return ((str(err).strip().splitlines() or [type(err).__name__])[0])[:200]


def load_harness_tasks(hs: Mapping[str, Any], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The harness task dict ({"tasks", "groups", "group_map"}) of every requested name, loaded offline."""
    names = requested_tasks(hs)
    manager = task_manager(names, include_paths(hs), metadata)
    merged: dict[str, Any] = {"tasks": {}, "groups": {}, "group_map": {}}
    for name in names:
        try:
            with deadline(hs.get("load_timeout_s"), name), quiet_harness():
                loaded = manager.load([name])
        except DataError as err:
            if "task data not available offline" in str(err):
                raise
            raise DataError(f"task data not available offline: {name}: {err}") from None
        except ModuleNotFoundError as err:
            raise DataError(f"harness task {name} needs the package {err.name!r}, which is not installed; "
                            f"install it or drop {name} from eval.harness.tasks") from None
        except FileNotFoundError as err:
            raise DataError(f"task data not available offline: {name} ({_first_line(err)}); check the "
                            "task's data_files, or its dataset in the HF datasets cache") from None
        except (OSError, ValueError, KeyError, RuntimeError, ImportError) as err:
            hint = "the hub is offline (eval.harness.offline=true): put the dataset in the HF datasets cache, " \
                "point a task YAML at local files, or set eval.harness.offline=false on a machine with network"
            raise DataError(f"task data not available offline: {name} ({_first_line(err)}); "
                            f"{hint if hs.get('offline', True) else 'check the task dataset'}") from None
        for key in merged:
            merged[key].update(loaded.get(key) or {})
    unsafe = [t for t, task in merged["tasks"].items() if getattr(task, "UNSAFE_CODE", False)]
    if unsafe and not hs.get("allow_code_execution"):
        raise ConfigError(f"harness task(s) {', '.join(unsafe[:3])} run model-written code; "
                          "set eval.harness.allow_code_execution=true to allow it")
    return merged
