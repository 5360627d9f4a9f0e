"""Bad configs and bad data stop `python train.py` before training: one `error:` line naming the problem,
exit status 2, no traceback, nothing written (no checkpoint, no metrics, no summary, no export).

Hydra's own composition errors (unknown keys or groups) happen before our code runs: Hydra prints a few lines
and exits 1 without a traceback; `check_overrides` (validate.py) turns them into one line + exit 2 for an entry
point that calls it first.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from apexlm.training.validate import check_overrides, hydra_error_line
from tests.support.runs import CONFIG_DIR, DATA_DIR, MICRO, cli_many, error_lines, train_cli

BASE = ["experiment=full_it", "debug=fdr", *MICRO, "threads=1", "logger=none"]
HF = ["experiment=full_it", "debug=fdr", "model=hf", "data.block_size=64", "threads=1", "logger=none"]
APEX = [*BASE, "method=apex"]
TOKENIZER = DATA_DIR / "tokenizer"
TOK = f"model.tokenizer={TOKENIZER}"  # a fresh tiny model on user data needs a tokenizer
HYDRA = "hydra"  # marker: Hydra's own error (exit 1, a few lines, no traceback)


def _llama_config(**over) -> dict:
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 32,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 64,
            "max_position_embeddings": 256, "vocab_size": 64, "rms_norm_eps": 1e-6, **over}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Inputs the cases point at: local model dirs, broken data files, an existing export target."""
    d = tmp_path_factory.mktemp("inputs")
    gpt2 = d / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 32, "n_head": 2, "n_layer": 1}))
    short = d / "short_llama"
    short.mkdir()
    (short / "config.json").write_text(json.dumps(_llama_config(max_position_embeddings=32)))
    small_vocab = d / "small_vocab_llama"
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(**{k: v for k, v in _llama_config().items() if k != "model_type"})) \
        .save_pretrained(small_vocab, safe_serialization=True)
    for f in TOKENIZER.iterdir():  # a tokenizer with far more than 64 tokens
        shutil.copy(f, small_vocab / f.name)
    bad_jsonl = d / "bad.jsonl"
    bad_jsonl.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                         '{"messages": [}\n')
    (d / "blank").mkdir()
    (d / "blank" / "a.txt").write_text("  \n\n")
    latin1 = d / "latin1.txt"
    latin1.write_bytes("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e ".encode("latin-1") * 200)
    taken = d / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    return {"gpt2": gpt2, "short": short, "small_vocab": small_vocab, "bad_jsonl": bad_jsonl,
            "blank": d / "blank", "latin1": latin1, "taken": taken, "dir": d}


def _cases(f: dict[str, Path]) -> list[tuple[str, list[str], str]]:
    """(id, args, phrase the error must contain)."""
    return [
        ("k_ratio_zero", [*APEX, "method.k_ratio=0"], "method.k_ratio=0"),
        ("k_ratio_above_half", [*APEX, "method.k_ratio=0.55"], "method.k_ratio=0.55"),
        ("tuned_attn_misses_P_N", [*APEX, "method.tuned_attn_ratio=0.3"], "tuned_attn_ratio"),
        ("stages_zero", [*APEX, "method.stages=0"], "method.stages=0"),
        ("stages_beyond_steps", [*APEX, "method.stages=9"], "more than the 4 optimizer steps"),
        ("stage_steps_beyond_end", [*APEX, "method.stage_steps=[2,7]"], "method.stage_steps"),
        ("unknown_key", [*APEX, "method.k_ratoi=0.1"], HYDRA + ":k_ratoi"),
        ("unknown_method_group", [*BASE, "method=lorax"], HYDRA + ":method/lorax"),
        ("unknown_method_name", [*BASE, "method.name=sgd"], "method.name='sgd'"),
        ("unknown_operator", [*APEX, "method.operator=fft"], "method.operator='fft'"),
        ("unknown_scoring", [*APEX, "method.scoring=max"], "method.scoring='max'"),
        ("unknown_selection", [*APEX, "method.selection=best"], "method.selection='best'"),
        ("negative_lr", [*BASE, "optim.lr=-0.001"], "optim.lr=-0.001"),
        ("no_step_budget", [*BASE, "trainer.max_steps=0"], "trainer.max_steps=0"),
        ("non_llama_model", [*HF, f"model.pretrained={f['gpt2']}"], "model_type 'gpt2'"),
        ("kv_groups_unusable", [*APEX, "model.num_key_value_heads=1"], "KV groups"),
        ("ffn_channels_unusable", [*APEX, "model.intermediate_size=4"], "FFN channels"),
        ("heads_not_dividing_hidden", [*BASE, "model.num_attention_heads=5"], "not divisible"),
        ("vocab_mismatch", [*HF, f"model.pretrained={f['small_vocab']}"], "tokenizer has"),
        ("block_beyond_positions", [*HF, f"model.pretrained={f['short']}"], "max_position_embeddings=32"),
        ("missing_pretrained", [*HF], "model.pretrained is required"),
        ("missing_data_path", [*BASE, TOK, "data=text_files", f"data.path={f['dir']}/nope"], "nope"),
        ("empty_data", [*BASE, TOK, "data=text_files", f"data.path={f['blank']}"], "empty"),
        ("malformed_jsonl", [*BASE, TOK, "data=jsonl_messages", f"data.path={f['bad_jsonl']}"], "bad.jsonl:2"),
        ("non_utf8_text", [*BASE, TOK, "data=text_files", f"data.path={f['latin1']}"], "not UTF-8"),
        ("fewer_examples_than_batch", [*BASE, "data.max_train_samples=2"], "batch_size"),
        ("export_to_exists", [*BASE, f"export_to={f['taken']}"], "already exists"),
        ("resume_last_without_checkpoint", [*BASE, "ckpt_path=last"], "ckpt_path=last found no"),
        ("resume_missing_file", [*BASE, f"ckpt_path={f['dir']}/gone.ckpt"], "not a checkpoint file"),
        ("unknown_guard_mode", [*BASE, "callbacks.guard.on_nonfinite=explode"], "callbacks.guard.on_nonfinite"),
        # strategy x method x devices (training/strategy_check.py; more cases in tests/training/)
        ("deepspeed_with_apex", [*APEX, "trainer=deepspeed"], "use trainer=fsdp"),
        ("fsdp_cpu_one_device", [*BASE, "trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=1"],
         "trainer.devices=2"),
        ("unknown_strategy", [*BASE, "trainer.strategy=horovod"], "trainer.strategy=horovod is unknown"),
        *([("deepspeed_missing", [*BASE, "trainer=deepspeed"], "pip install deepspeed")]
          if importlib.util.find_spec("deepspeed") is None else []),  # with it installed, full+deepspeed may run
    ]


IDS = [c[0] for c in _cases({k: Path("x") for k in ("gpt2", "short", "small_vocab", "bad_jsonl", "blank",
                                                    "latin1", "taken", "dir")})]


@pytest.fixture(scope="module")
def results(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Every case run once through `python train.py` (two at a time); {id: (args, phrase, result, cwd)}."""
    cases = _cases(files)
    cwds = [tmp_path_factory.mktemp(name) for name, _, _ in cases]
    out = cli_many([args for _, args, _ in cases], cwds)
    return {name: (args, phrase, res, cwd) for (name, args, phrase), res, cwd in zip(cases, out, cwds, strict=True)}


@pytest.mark.slow  # 30 `python train.py` runs (forked two at a time)
@pytest.mark.parametrize("case", IDS)
def test_bad_input_stops_before_training(case: str, results: dict[str, tuple], files: dict[str, Path]) -> None:
    args, phrase, res, cwd = results[case]
    report = f"args={args}\nrc={res.returncode}\nstderr:\n{res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr, report
    if phrase.startswith(HYDRA):
        assert res.returncode != 0 and phrase.split(":", 1)[1] in res.stderr, report
    else:
        assert res.returncode == 2, report
        lines = error_lines(res.stderr)
        assert len(lines) == 1 and phrase in lines[0], report
    logs = cwd / "logs"
    for pattern in ("*.ckpt", "summary.json", "metrics.csv", "export"):
        assert not list(logs.rglob(pattern)), (pattern, report)
    assert sorted(p.name for p in files["taken"].iterdir()) == ["keep.txt"]


@pytest.mark.slow
def test_unknown_key_through_a_fresh_interpreter(tmp_path: Path) -> None:
    """Hydra's unknown-key error as a user meets it: non-zero, no traceback, the key named."""
    res = train_cli([*APEX, "method.k_ratoi=0.1"], tmp_path)
    assert res.returncode != 0 and "Traceback" not in res.stderr and "k_ratoi" in res.stderr, res.stderr


@pytest.mark.parametrize("args,phrase", [
    (["method=apex", "method.k_ratoi=0.1"], "method.k_ratoi"),
    (["method=lorax"], "method/lorax"),
    (["-m", "method=apex", "seed=1,2", "+hydra.foo=1", "method.operator=monarch,dense", "method.stagez=2"],
     "method.stagez"),
])
def test_check_overrides_one_line(args: list[str], phrase: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        check_overrides(args, CONFIG_DIR)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and phrase in err[0], err


def test_check_overrides_accepts_valid_sweeps() -> None:
    check_overrides(["-m", "experiment=apex_it", "seed=1,2", "optim.lr=1e-3,3e-4", "hydra.verbose=true",
                     "--cfg", "job"], CONFIG_DIR)


def test_hydra_error_line_keeps_options_on_one_line() -> None:
    err = ValueError("In 'train': Could not find 'method/x'\n\nAvailable options in 'method':\n\tapex\n\tfull\n"
                     "Config search path:\n")
    line = hydra_error_line(err)
    assert "\n" not in line and "method/x" in line and "apex, full" in line
