"""`python -m apexlm.analysis.report <multirun dir>`: the sweep report (tables, deltas vs controls, plots).

The implementation lives in `sweep` and its helpers; this module is the documented entry point.
"""

from __future__ import annotations

import sys

from apexlm.analysis.report.sweep import main

if __name__ == "__main__":
    sys.exit(main())
