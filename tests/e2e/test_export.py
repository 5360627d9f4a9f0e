"""export/ is a plain HF model: vanilla transformers loads it with the trained model's logits.

The trained model's logits are captured just before `Method.finalize` (APEX still wrapped, adapters unmerged),
so the test covers fusing/merging and saving together.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from apexlm.methods import apex as apex_mod
from apexlm.methods import peft_adapters
from tests.support.models import micro_config
from tests.support.runs import DATA_DIR, MICRO, run_in_process

pytestmark = pytest.mark.slow  # five in-process training runs

PROBE = {"input_ids": torch.tensor([[5, 17, 99, 3, 250, 8, 41, 7], [1, 2, 3, 4, 5, 6, 7, 8]]),
         "attention_mask": torch.tensor([[1] * 8, [0, 0, 1, 1, 1, 1, 1, 1]])}


@pytest.mark.parametrize("experiment,cls", [("apex_it", apex_mod.ApexMethod), ("apex_cpt", apex_mod.ApexMethod),
                                            ("full_it", None), ("lora_it", peft_adapters.PeftAdapterMethod)])
def test_export_reloads_with_identical_logits(experiment: str, cls, tmp_path: Path, monkeypatch) -> None:
    captured: dict[str, torch.Tensor] = {}
    if cls is not None:
        original = cls.finalize

        def finalize(self, model):
            with torch.no_grad():
                captured["logits"] = model(**PROBE).logits.clone()
            return original(self, model)

        monkeypatch.setattr(cls, "finalize", finalize)
    recorded: list[int] = []
    if cls is apex_mod.ApexMethod:
        original_transition = cls.transition

        def transition(self, model, optimizer):
            recorded.append(sum(self.apex.recorder.count["ffn"]) + sum(self.apex.recorder.count["attn"]))
            assert model.training  # training forwards run in train mode, so they are scored
            return original_transition(self, model, optimizer)

        monkeypatch.setattr(cls, "transition", transition)
    run_dir = tmp_path / "run"
    summary = run_in_process([f"experiment={experiment}", "debug=fdr", *MICRO, "logger=csv", "export=true",
                              f"paths.log_dir={tmp_path}"], run_dir)
    exported = AutoModelForCausalLM.from_pretrained(run_dir / "export", dtype=torch.float32).eval()
    with torch.no_grad():
        got = exported(**PROBE).logits
    if "logits" in captured:
        ref = captured["logits"]
        assert ((got - ref).norm() / ref.norm()).item() <= 1e-5
    # a share of the plain model; APEX CPT trains every base weight *and* its operators, so it is just above 1
    cap = 1.01 if experiment == "apex_cpt" else 1.0
    assert summary["exported"] and 0 < summary["trainable_fraction"] <= cap
    if experiment == "apex_cpt":
        assert summary["trainable_fraction"] > 1.0 and summary["params_in_training"] > summary["total_params"]
    if experiment.startswith("apex"):
        expected = 3 if experiment == "apex_cpt" else 2
        assert summary["stages_completed"] == expected
        stage_files = sorted((run_dir / "stages").glob("*.json"))
        assert len(stage_files) == expected - 1
        assert recorded and all(n > 0 for n in recorded)  # the stage's training forwards were scored
        for f in stage_files:
            assert json.loads(f.read_text())["transition_s"] < 1.0


def test_apex_scores_training_forwards_of_a_pretrained_model(tmp_path: Path, monkeypatch) -> None:
    """`from_pretrained` returns an eval-mode model; training must still run (and be scored) in train mode."""
    from transformers import LlamaForCausalLM

    from apexlm.data.tokenizer import load_tokenizer

    tok = load_tokenizer(DATA_DIR / "tokenizer")
    base = tmp_path / "base"
    LlamaForCausalLM(micro_config(vocab=len(tok), max_positions=2048)).save_pretrained(base)
    tok.save_pretrained(base)
    seen: list[tuple[bool, int]] = []
    original = apex_mod.ApexMethod.transition

    def transition(self, model, optimizer):
        seen.append((model.training, sum(self.apex.recorder.count["ffn"])))
        return original(self, model, optimizer)

    monkeypatch.setattr(apex_mod.ApexMethod, "transition", transition)
    run_in_process(["experiment=apex_it", "debug=fdr", *MICRO, f"model.pretrained={base}", "logger=csv",
                    f"paths.log_dir={tmp_path}"], tmp_path / "run")
    assert seen and all(training and count > 0 for training, count in seen), seen
