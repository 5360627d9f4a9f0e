"""Analysis tools (method §8): effective rank, activation-magnitude distributions, P/N selection overlap.

`Analyzer` (in `apexlm.analysis.analyzer`) runs them on a model against its base and writes JSON + PNG under a
run's `analysis/` folder; `apexlm.callbacks.analytics.AnalyticsCallback` calls it during training.
"""

from apexlm.analysis.erank import effective_rank

__all__ = ["effective_rank"]
