"""APEX (Advantageous Parameter EXpansion, arXiv 2505.24241) in pure torch + transformers.

Public API: `Apex` (the life cycle: score → expand → restage → fuse), `ApexConfig`, and the budget
helpers `count_params` / `apex_budget`. See `/work/shared/apex-spec.md` for the method (§ numbers are
cited in each module).
"""

from apexlm.apex.budget import apex_budget, count_params
from apexlm.apex.config import ApexConfig
from apexlm.apex.core import Apex

__all__ = ["Apex", "ApexConfig", "apex_budget", "count_params"]
