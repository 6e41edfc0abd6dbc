"""The experiments of BENCHMARKS.md, runnable from Python or ``dasim bench CASE``.

Benchmarks are not tests: CI runs a seconds-long smoke version of each
(``dasim bench CASE --smoke``); the full runs and their tables live in
``docs/benchmarks.md``.
"""

from ._report import markdown_table, plot_metric
from ._runner import Case, Method, run_case
from .b1 import B1_CASES, b1_case, b1_methods

__all__ = [
    "Case",
    "Method",
    "run_case",
    "markdown_table",
    "plot_metric",
    "B1_CASES",
    "b1_case",
    "b1_methods",
]
