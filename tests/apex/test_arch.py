"""Architecture introspection (method §1–§3)."""

import pytest
import torch
from torch import nn

from apexlm.apex import Apex
from apexlm.apex.arch import inspect_model
from apexlm.errors import ModelError
from tests.support.models import llama, qwen2


def test_geometry_gqa_and_qwen2():
    a = inspect_model(llama(96, 2, 6, 2, 97))
    assert (a.n_heads, a.n_kv, a.head_dim, a.rep, a.d_ff, a.n_layers) == (6, 2, 16, 3, 97, 2)
    q = inspect_model(qwen2())
    assert (q.n_kv, q.rep, q.d_ff) == (2, 2, 89)


def test_unsupported_model_raises_one_line():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
    with pytest.raises(ModelError) as err:
        Apex(Toy())
    assert "LLaMA, Mistral, Qwen2, SmolLM2" in str(err.value) and "\n" not in str(err.value)


def test_shared_act_fn_is_split_per_layer():
    model = llama(64, 3, 4, 4, 97)
    act = model.model.layers[0].mlp.act_fn
    for layer in model.model.layers:
        layer.mlp.act_fn = act
    inspect_model(model)
    ids = {id(layer.mlp.act_fn) for layer in model.model.layers}
    assert len(ids) == 3
    x = torch.randn(4)
    assert torch.equal(model.model.layers[2].mlp.act_fn(x), act(x))
