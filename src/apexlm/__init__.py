"""apexlm: train LLaMA-family causal LMs with APEX (Advantageous Parameter EXpansion) and its baselines."""

__version__ = "0.1.0"
