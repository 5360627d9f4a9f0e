"""Config checks that must hold before any data is read or any step is taken (one-line errors).

`validate_config(cfg)` runs first in `apexlm.training.run.fit`: it reads only the config, a local model's
`config.json` and the file system, and raises a `UserError` (ConfigError / ModelError / DataError) whose message
says what is wrong and how to fix it; the entry point prints it as one line and exits 2. Nothing is written.
Data content (malformed JSONL, non-UTF-8 text, empty files) is checked by `apexlm.data` when it is loaded, still
before training. `check_overrides(argv, config_dir)` does the same for Hydra's own composition errors
(unknown keys or groups), which otherwise print several lines and exit 1; train.py may call it before `main()`.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from apexlm.errors import ConfigError, ModelError
from apexlm.training.strategy_check import check_strategy

SCHEDULES = ("cosine", "constant")
LOGGERS = ("wandb", "csv", "none")
GUARD_MODES = ("stop", "skip")
HINTS = {"model.pretrained": "<hub id or local model dir>", "data.path": "<file or folder>"}


def _number(value: Any, name: str, lo: float, hi: float = math.inf, lo_open: bool = False,
            hi_open: bool = False, integer: bool = False) -> None:
    """Raise ConfigError unless `value` is a (finite) number in the interval."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigError(f"{name}={value!r} must be {kind}; fix the config")
    ok = math.isfinite(value) and (lo < value if lo_open else lo <= value) and \
        (value < hi if hi_open else value <= hi)
    if not ok:
        span = f"{'>' if lo_open else '>='} {lo:g}" if math.isinf(hi) else \
            f"in {'(' if lo_open else '['}{lo:g}, {hi if integer else format(hi, 'g')}{')' if hi_open else ']'}"
        raise ConfigError(f"{name}={value} is out of range; use {kind} {span}")


def _choice(value: Any, name: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is unknown; choose one of {', '.join(allowed)}")


def _missing(cfg: DictConfig) -> None:
    """Mandatory values (`???`) left unset, e.g. model=hf without model.pretrained."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    if missing:
        key = missing[0]
        raise ConfigError(f"{key} is required but not set; add {key}={HINTS.get(key, '<value>')} to the command")


def validate_config(cfg: DictConfig) -> None:
    """Every check that needs no data and no model weights; raises a one-line UserError.

    The method's own fields are checked by building it (its constructor and, for APEX, `ApexConfig` own those
    checks); its stage boundaries and model-shape needs by asking it. Nothing here repeats their lists.
    """
    from apexlm.methods import build_method

    _missing(cfg)
    method = build_method(cfg.method, seed=int(cfg.get("seed", 0)))
    _check_optim(cfg.optim)
    steps = _check_trainer(cfg.trainer)
    check_strategy(cfg)  # strategy x method x devices (training/strategy_check.py)
    if steps is not None:
        method.boundaries(steps)
    dims = _check_model(cfg.model)
    bs = cfg.data.get("block_size")
    max_pos = dims.get("max_position_embeddings")
    if isinstance(bs, int) and max_pos and bs > int(max_pos):
        raise ConfigError(f"data.block_size={bs} exceeds the model's max_position_embeddings={max_pos}; lower it")
    from apexlm.data.spec import parse_spec

    parse_spec(cfg.data)
    method.check_model(dims, int(cfg.get("seed", 0)))
    _check_run(cfg)
    from apexlm.eval.harness import check_harness_config

    check_harness_config(cfg)  # harness tasks at the end of training: resolved and loaded now, not after it


def _check_optim(o: DictConfig) -> None:
    _number(o.lr, "optim.lr", 0.0, lo_open=True)
    _number(o.get("weight_decay", 0.0), "optim.weight_decay", 0.0)
    _number(o.get("warmup_ratio", 0.0), "optim.warmup_ratio", 0.0, 1.0, hi_open=True)
    _number(o.get("restart_warmup_ratio", 0.0), "optim.restart_warmup_ratio", 0.0, 1.0, hi_open=True)
    _number(o.get("eps", 1e-8), "optim.eps", 0.0, lo_open=True)
    for i, beta in enumerate(o.get("betas", (0.9, 0.95))):
        _number(beta, f"optim.betas[{i}]", 0.0, 1.0, hi_open=True)
    _choice(o.get("schedule", "cosine"), "optim.schedule", SCHEDULES)


def _check_trainer(t: DictConfig) -> int | None:
    """Unknown keys and the step budget; returns the optimizer steps when trainer.max_steps fixes them."""
    from apexlm.training.setup import TRAINER_KEYS

    unknown = sorted(set(t.keys()) - set(TRAINER_KEYS))
    if unknown:
        raise ConfigError(f"trainer.{unknown[0]} is not a trainer setting this project passes on; use one of "
                          f"{', '.join(TRAINER_KEYS)}")
    max_steps = t.get("max_steps")
    if max_steps is not None and max_steps != -1:
        _number(max_steps, "trainer.max_steps", 1, integer=True)
    elif not isinstance(t.get("max_epochs"), int) or t.max_epochs < 1:
        raise ConfigError(f"no step budget: trainer.max_steps={max_steps}, trainer.max_epochs={t.get('max_epochs')}; "
                          "set trainer.max_steps > 0 or trainer.max_epochs >= 1")
    _number(t.get("accumulate_grad_batches", 1), "trainer.accumulate_grad_batches", 1, integer=True)
    if t.get("gradient_clip_val") is not None:
        _number(t.gradient_clip_val, "trainer.gradient_clip_val", 0.0)
    return int(max_steps) if max_steps is not None and max_steps > 0 else None


def _looks_local(ref: str) -> bool:
    return ref.startswith(("/", ".", "~")) or ref.count("/") > 1


def _check_model(m: DictConfig) -> dict[str, Any]:
    """Architecture facts known without loading weights: tiny sizes, or a local model dir's config.json."""
    kind, ref = m.get("kind", "hf"), m.get("pretrained")
    if kind == "gguf":
        return {}
    if ref:
        return _local_model_dims(str(ref), kind)
    if kind != "tiny":
        raise ModelError("model.pretrained is empty; set model.pretrained=<hub id or local dir>")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        _number(m.get(key), f"model.{key}", 1, integer=True)
    heads, kv = int(m.num_attention_heads), int(m.get("num_key_value_heads") or m.num_attention_heads)
    if m.hidden_size % heads:
        raise ModelError(f"model.hidden_size={m.hidden_size} is not divisible by model.num_attention_heads={heads}")
    if kv < 1 or heads % kv:
        raise ModelError(f"model.num_attention_heads={heads} must be a multiple of model.num_key_value_heads={kv}")
    return {"n_layers": int(m.num_hidden_layers), "n_kv": kv, "d_ff": int(m.intermediate_size),
            "max_position_embeddings": m.get("max_position_embeddings")}


def _local_model_dims(ref: str, kind: str) -> dict[str, Any]:
    path = Path(ref).expanduser()
    if not _looks_local(ref) and not path.exists():
        return {}  # a hub id: checked when it is loaded
    hint = " (run `make base`, or model.pretrained=null for a fresh tiny model)" if kind == "tiny" else ""
    if not path.exists():
        raise ModelError(f"model.pretrained={ref} does not exist; give an existing local model dir or a hub id{hint}")
    conf = path / "config.json"
    if not conf.is_file():
        raise ModelError(f"model.pretrained={ref} has no config.json; point it at a Hugging Face model dir{hint}")
    try:
        c = json.loads(conf.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read {conf} ({type(e).__name__}); fix or re-export the model dir") from None
    from apexlm.models.builders import SUPPORTED

    if c.get("model_type") not in SUPPORTED:
        raise ModelError(f"model_type '{c.get('model_type')}' in {conf} is not supported; use a LLaMA-family "
                         f"causal LM ({', '.join(SUPPORTED)}) with q/k/v/o and gate/up/down projections")
    heads = c.get("num_attention_heads")
    kv = c.get("num_key_value_heads") or heads
    if not isinstance(heads, int) or not isinstance(kv, int) or kv < 1 or heads % kv:
        raise ModelError(f"{conf}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv}")
    return {"n_layers": c.get("num_hidden_layers"), "n_kv": kv, "d_ff": c.get("intermediate_size"),
            "max_position_embeddings": c.get("max_position_embeddings")}


def _check_run(cfg: DictConfig) -> None:
    """Seed, threads, logger, callbacks, resume and export targets."""
    _number(cfg.get("seed", 0), "seed", 0, 2**32 - 1, integer=True)
    if cfg.get("threads") is not None:
        _number(cfg.threads, "threads", 1, integer=True)
    _choice((cfg.get("logger") or {}).get("kind", "csv"), "logger.kind", LOGGERS)
    c = cfg.get("callbacks") or {}
    _choice((c.get("guard") or {}).get("on_nonfinite", "stop"), "callbacks.guard.on_nonfinite", GUARD_MODES)
    ck = c.get("checkpoint") or {}
    if ck.get("enabled", True):
        _number(ck.get("every_n_steps", 50), "callbacks.checkpoint.every_n_steps", 1, integer=True)
    if cfg.get("export_to") and Path(str(cfg.export_to)).expanduser().exists():
        raise ConfigError(f"export_to={cfg.export_to} already exists; delete it or choose another path")
    from apexlm.training.find_checkpoint import resolve_ckpt_path

    resolve_ckpt_path(cfg)


# ---- Hydra's own errors ----------------------------------------------------------------------------
_VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-dir", "-cd",
                "--info", "-i", "--shell-completion", "-sc", "--experimental-rerun")


def hydra_error_line(err: BaseException) -> str:
    """Hydra's multi-line composition message as one line (drops full_key/object_type/search-path details)."""
    keep, options, section = [], [], ""
    for raw in str(err).splitlines():
        line = raw.strip()
        if raw[:1] in ("\t", " ") and section:
            if section.startswith("Available options"):
                options.append(line)
            continue
        section = ""
        if not line or line.startswith(("full_key:", "object_type=", "Set the environment variable")):
            continue
        if line.endswith(":") and line.startswith(("Available options", "Config search path")):
            section = line
            if line.startswith("Available options"):
                keep.append(line)
            continue
        keep.append(line)
    cause = str(err.__cause__ or "").strip().splitlines()
    if cause and cause[0] not in keep:
        keep.append(f"({cause[0]})")
    text = " ".join(keep) + (" " + ", ".join(options) if options else "")
    return text or type(err).__name__


def check_overrides(argv: Sequence[str], config_dir: str, config_name: str = "train") -> None:
    """Compose like train.py will (sweeps at their first value); on a Hydra error print one line, exit 2."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--config-name", "-cn"):
            skip = True
        elif a.startswith(("--config-name=", "-cn=")):
            config_name = a.split("=", 1)[1]
        elif a in _VALUE_FLAGS:
            skip = a not in ("--info", "-i")
        elif not a.startswith("-"):
            args.append(a)
    try:
        plain = []
        for o in OverridesParser.create().parse_overrides(args):
            if o.get_key_element().lstrip("+~").startswith("hydra"):
                continue
            if o.is_sweep_override():
                plain.append(f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}")
            else:
                plain.append(o.input_line)
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            compose(config_name=config_name, overrides=plain)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        print(f"error: {hydra_error_line(e)}", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        GlobalHydra.instance().clear()
