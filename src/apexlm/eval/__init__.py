"""Evaluation: token-weighted perplexity, exact match by greedy generation, multiple-choice log-likelihood.

`evaluate_model(model, tokenizer, cfg, run_dir)` (in `apexlm.eval.run_eval`) runs what `cfg.eval` asks for
and writes `eval.json`; `eval.py` loads a run's export (or checkpoint) or any HF model and calls it.
"""
