"""APEX (Advantageous Parameter EXpansion, arXiv 2505.24241) in pure torch + transformers.

Public API: `Apex` (the life cycle: score → expand → restage → fuse), `ApexConfig`, and the budget
helpers `count_params` / `apex_budget`. See docs/method.md for the method and the § numbers
cited in each module.
"""

from apexlm.apex.config import ApexConfig
from apexlm.apex.core import Apex
from apexlm.apex.param_budget import apex_budget
from apexlm.apex.params import count_params

__all__ = ["Apex", "ApexConfig", "apex_budget", "count_params"]
