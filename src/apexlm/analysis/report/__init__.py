"""The sweep report: `python -m apexlm.analysis.report <multirun dir>` (tables, deltas vs controls, plots).

collect: read a multirun's job dirs; stats: paired deltas and intervals; tables / figures: the output;
sweep: the command line that ties them together.
"""
