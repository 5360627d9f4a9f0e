"""lm-evaluation-harness beside our own scorers: the shipped offline tasks agree with them on the same items,
eval.py writes harness/... keys, and a missing task or missing data stops with one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apexlm.data.eval_items import load_eval_items
from apexlm.data.instructions import score_answer
from apexlm.eval.cli import eval_main, run_evaluation
from apexlm.eval.exact_match import items_per_task
from apexlm.eval.harness import prepare_harness
from apexlm.eval.harness_tasks import SUITES
from tests.support.micro_runs import micro_runs
from tests.support.runs import compose_cfg

FAST = ["threads=1", "eval.val=false", "eval.ppl_domains=[]", "eval.max_items_per_task=4", "eval.max_new_tokens=6"]
TASKS = ("syllogism", "letter_counting")
OFFLINE_HINT = ("(eval.harness.offline=true): put the dataset in the HF datasets cache, point a task YAML at local "
                "files, or set eval.harness.offline=false on a machine with network")


def _cfg(tmp_path: Path, *overrides: str):
    return compose_cfg([*FAST, f"paths.log_dir={tmp_path}/logs", *overrides], tmp_path / "out", config_name="eval")


def _error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """All of stderr, as lines: the check runs before a model is loaded, so nothing else is printed."""
    return capsys.readouterr().err.strip().splitlines()


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class _Run:
    """Records what `log_to_wandb` sends to an active W&B run."""

    def __init__(self) -> None:
        self.logged: dict = {}
        self.summary: dict = {}

    def log(self, payload: dict) -> None:
        self.logged.update(payload)


@pytest.mark.slow  # trains the shared micro runs (tests.support.micro_runs) on first use
def test_eval_py_harness_keys_agree_with_own_scorers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One evaluation of a finished micro run: both scorers on the same items, same prompts and outputs."""
    import apexlm.eval.wandb_log as wandb_log

    run, run_dir = _Run(), micro_runs()["full"]
    monkeypatch.setattr(wandb_log, "active_run", lambda: run)
    names = [f"apexlm_rg_{t}" for t in TASKS] + [f"apexlm_mc_{t}" for t in TASKS]
    results, target, _ = run_evaluation(_cfg(tmp_path, f"run_dir={run_dir}", f"eval.harness.tasks=[{','.join(names)}]"))
    assert run.summary["eval/harness/apexlm_mc_syllogism/acc"] == results["harness/apexlm_mc_syllogism/acc"]
    assert "eval/harness" in run.logged                                   # the per-task table
    saved = json.loads(sorted(target.glob("eval*.json"), key=lambda p: p.stat().st_mtime)[-1].read_text())
    info = saved["harness"]
    assert info["lm_eval_version"] == "0.4.13" and info["batch_size"] == 8 and info["dtype"] == "float32"
    folder = Path(info["dir"])
    assert (folder / "results.json").is_file() and (folder / "task_configs" / "apexlm_rg_syllogism.yaml").is_file()
    ours = _jsonl(sorted(target.glob("eval_generations*.jsonl"), key=lambda p: p.stat().st_mtime)[-1])
    for task in TASKS:
        assert saved[f"harness/apexlm_rg_{task}/items"] == 4 == saved[f"items/{task}"]
        assert saved[f"harness/apexlm_rg_{task}/exact_match"] == saved[f"exact_match/{task}"]
        assert saved[f"harness/apexlm_mc_{task}/acc"] == pytest.approx(saved[f"mc_accuracy/{task}"])
        samples = _jsonl(folder / f"samples_apexlm_rg_{task}.jsonl")
        mine = [r for r in ours if r["task"] == task]
        assert [s["doc"]["question"] for s in samples] == [r["question"] for r in mine]      # same items
        assert [s["filtered_resps"][0].strip() for s in samples] == [r["prediction"] for r in mine]
    assert results["harness/apexlm_mc_syllogism/acc"] == saved["harness/apexlm_mc_syllogism/acc"]


class _Answers:
    """A stand-in harness LM whose answer to document i is the reference, reworded by i mod 6."""

    @staticmethod
    def reply(answer: str, i: int) -> str:
        return [answer, f"  {answer} ", answer.upper(), f"The answer is {answer}", "wrong", f"{answer}."][i % 6]


@pytest.mark.slow  # trains the shared micro runs (tests.support.micro_runs) on first use
def test_harness_exact_match_is_the_task_scorer_on_the_same_items(tmp_path: Path) -> None:
    """Scored predictions (not a random model's zeros): harness exact_match = our score_answer per task."""
    from lm_eval.api.model import LM
    from lm_eval.evaluator import evaluate
    from transformers import AutoTokenizer

    class Replies(LM):
        def generate_until(self, requests, disable_tqdm=False):  # noqa: ANN001, ANN201, ARG002
            return [_Answers.reply(r.doc["answer"], r.doc_id) for r in requests]

        def loglikelihood(self, requests, disable_tqdm=False):  # noqa: ANN001, ANN201, ARG002
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm=False):  # noqa: ANN001, ANN201, ARG002
            raise NotImplementedError

    tokenizer = AutoTokenizer.from_pretrained(str(micro_runs()["full"] / "export"))
    ev = {"max_items_per_task": 12, "max_new_tokens": 8, "harness": {"tasks": ["apexlm_rg"]}}
    plan = prepare_harness(tokenizer, {"paths": {}}, ev)
    out = evaluate(lm=Replies(), task_dict=plan.task_dict, bootstrap_iters=0, log_samples=False)["results"]
    items = items_per_task(load_eval_items(None), 12)
    macro, differs = [], 0
    for task in sorted({i["task"] for i in items}):
        mine = [i for i in items if i["task"] == task]
        em = [score_answer(i, _Answers.reply(i["answer"], k)) for k, i in enumerate(mine)]
        strict = [float(_Answers.reply(i["answer"], k).strip() == i["answer"]) for k, i in enumerate(mine)]
        got = out[f"apexlm_rg_{task}"]
        assert got["exact_match,none"] == pytest.approx(sum(em) / len(em)), task
        assert got["exact_match_strict,none"] == pytest.approx(sum(strict) / len(strict)), task
        differs += em != strict
        macro.append(sum(em) / len(em))
    assert out["apexlm_rg"]["exact_match,none"] == pytest.approx(sum(macro) / len(macro))
    assert 0 < min(macro) and max(macro) < 1 and differs         # lenient task scorers vs string equality


@pytest.mark.slow  # trains the shared micro runs (tests.support.micro_runs) on first use
def test_paper_suite_resolves_and_stops_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every suite name is checked against the registry before any data loads (an unknown one would be
    "unknown harness task(s)"); the first task's data then is not on this machine."""
    assert len(SUITES["paper_it"]) == 6
    run_dir = micro_runs()["full"]
    with pytest.raises(SystemExit) as exit_info:
        eval_main(_cfg(tmp_path, f"run_dir={run_dir}", "eval.harness.suite=paper_it"))
    assert exit_info.value.code == 2
    assert _error_lines(capsys) == ["error: task data not available offline: mmlu (Couldn't reach 'cais/mmlu'"
                                    " on the Hub (OfflineModeIsEnabled)); the hub is offline " + OFFLINE_HINT]


@pytest.mark.slow  # trains the shared micro runs (tests.support.micro_runs) on first use
@pytest.mark.parametrize("task,message", [("no_such_task", "unknown harness task(s): no_such_task"),
                                          ("my_missing", "task data not available offline: my_missing")])
def test_missing_task_or_data_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str,
                                                 message: str) -> None:
    _user_tasks(tmp_path)
    include = [f"eval.harness.include_path={tmp_path / 'tasks'}"] if task.startswith("my_") else []
    with pytest.raises(SystemExit) as exit_info:
        eval_main(_cfg(tmp_path, f"run_dir={micro_runs()['full']}", f"eval.harness.tasks=[{task}]", *include))
    err = _error_lines(capsys)
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith(f"error: {message}")


def _user_tasks(root: Path) -> None:
    """A user's task on a local JSON file, and one whose file is missing."""
    folder = root / "tasks"
    folder.mkdir(exist_ok=True)
    (folder / "qa.jsonl").write_text('{"q": "2+2=", "a": "4"}\n{"q": "3+3=", "a": "6"}\n')
    body = ("task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {file}\ntest_split: test\n"
            "output_type: generate_until\ndoc_to_text: '{{{{q}}}}'\ndoc_to_target: '{{{{a}}}}'\n"
            "generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: 4\n"
            "metric_list:\n  - metric: exact_match\n    higher_is_better: true\n")
    (folder / "my_qa.yaml").write_text(body.format(name="my_qa", file=folder / "qa.jsonl"))
    (folder / "my_missing.yaml").write_text(body.format(name="my_missing", file=folder / "absent.jsonl"))


@pytest.mark.slow  # trains the shared micro runs (tests.support.micro_runs) on first use
def test_user_task_on_local_json(tmp_path: Path) -> None:
    _user_tasks(tmp_path)
    results, _, _ = run_evaluation(_cfg(tmp_path, f"model.pretrained={micro_runs()['apex'] / 'export'}",
                                        "eval.exact_match=false", "eval.multiple_choice=false",
                                        "eval.harness.tasks=[my_qa]", f"eval.harness.include_path={tmp_path / 'tasks'}"))
    assert results["harness/my_qa/items"] == 2 and 0.0 <= results["harness/my_qa/exact_match"] <= 1.0


@pytest.mark.slow  # trains the shared micro runs (tests.support.micro_runs) on first use
def test_end_of_training_evaluation_ran_the_harness() -> None:
    """micro_runs()["full"] trains with eval.enabled=true and eval.harness.tasks=[apexlm_mc_syllogism]."""
    run_dir = micro_runs()["full"]
    saved = json.loads((run_dir / "eval.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert saved["harness/apexlm_mc_syllogism/acc"] == pytest.approx(saved["mc_accuracy/syllogism"])
    assert summary["eval/harness/apexlm_mc_syllogism/acc"] == saved["harness/apexlm_mc_syllogism/acc"]


def test_a_hanging_task_load_stops_with_one_line(tmp_path: Path) -> None:
    """eval.harness.load_timeout_s stops a task whose data loading blocks (here: a dataset that sleeps)."""
    from apexlm.errors import DataError
    from apexlm.eval.harness_setup import harness_settings, load_harness_tasks

    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "slow.py").write_text("import time\n\ndef load(**kwargs):\n    time.sleep(30)\n")
    (folder / "slow.yaml").write_text("task: slow\ncustom_dataset: !function slow.load\ntest_split: test\n"
                                      "output_type: generate_until\ndoc_to_text: q\ndoc_to_target: a\n")
    hs = harness_settings({"harness": {"tasks": ["slow"], "include_path": str(folder), "load_timeout_s": 1}})
    with pytest.raises(DataError, match=r"^task data not available offline: slow did not load in 1 s"):
        load_harness_tasks(hs, {})


def test_training_checks_harness_tasks_before_it_starts() -> None:
    """`check_harness_config` (for train.py's config validation) resolves names with no model at hand."""
    from apexlm.errors import ConfigError
    from apexlm.eval.harness import check_harness_config
    from tests.support.runs import MICRO

    check_harness_config(compose_cfg([*MICRO, "eval.enabled=true", "eval.harness.tasks=[apexlm_rg]"]))
    with pytest.raises(ConfigError, match="unknown harness task"):
        check_harness_config(compose_cfg([*MICRO, "eval.enabled=true", "eval.harness.tasks=[apexlm_nope]"]))
