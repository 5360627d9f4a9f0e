"""Effective rank of a matrix (method §8, Roy & Vetterli 2007).

erank(W) = exp(H(p)), p_i = σ_i / Σ_j σ_j, H(p) = −Σ p_i ln p_i, over the singular values σ of W.
It lies in [1, min(m, n)] and counts how many directions carry the matrix's "energy": the identity of size
n gives n, any rank-1 matrix gives 1. The paper uses it to argue that APEX spreads the trained weights
over more directions. Computed in float32 (the SVD of a bf16 weight is not supported and would be noisy).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def effective_rank(weight: torch.Tensor) -> float:
    """exp of the entropy of the normalised singular values of `weight` (m, n), in float32.

    A zero matrix has no direction at all and returns 0.0 (e.g. ΔW of a weight that did not train).
    """
    if weight.ndim != 2:
        raise ValueError(f"effective_rank needs a matrix, got shape {tuple(weight.shape)}")
    sigma = torch.linalg.svdvals(weight.detach().float())          # (min(m, n),)
    total = sigma.sum()
    if not torch.isfinite(total) or total <= 0:
        return 0.0
    p = sigma / total                                               # (min(m, n),), sums to 1
    entropy = -torch.special.xlogy(p, p).sum()                      # 0·ln 0 = 0
    return float(torch.exp(entropy))


def erank_per_layer(weights: dict[str, list[torch.Tensor]]) -> dict[str, list[float]]:
    """{matrix name: [erank of layer 0, 1, …]} for per-layer weight lists (`model_view.layer_weights`)."""
    return {name: [effective_rank(w) for w in per_layer] for name, per_layer in weights.items()}


def delta_erank(current: dict[str, list[torch.Tensor]], base: dict[str, list[torch.Tensor]]
                ) -> dict[str, list[float]]:
    """erank of ΔW = W − W_base per matrix and layer; `base` must already be in the current layout."""
    return {name: [effective_rank(w - b.to(w.device)) for w, b in zip(current[name], base[name], strict=True)]
            for name in current}
