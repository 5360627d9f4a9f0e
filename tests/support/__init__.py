"""The one place for what tests share: micro models and batches (`tests.support.models`), a tiny torch loop
that drives a method like the Lightning module (`tests.support.loop`), composed configs and pipeline runs
in-process or through `python train.py` (`tests.support.runs`), the session's shared micro runs
(`tests.support.micro_runs`) and small data samples (`tests.support.data`).

Import from these modules (`from tests.support.runs import MICRO, run_in_process`); conftest.py files only hold
fixtures.
"""
