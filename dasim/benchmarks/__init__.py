"""The experiments of BENCHMARKS.md, runnable from Python or ``dasim bench CASE``.

Each experiment is a thin definition over one case type, one runner, one report and
one timing module:

- :mod:`~dasim.benchmarks.case`: :class:`Case` (a twin-experiment setting) and
  :class:`Method` (a labelled filter configuration).
- :mod:`~dasim.benchmarks.runner`: :func:`run_case` and ``run_b2`` (seeds, tuning,
  reference posterior, joblib).
- :mod:`~dasim.benchmarks.report`: markdown tables and plots of every result.
- :mod:`~dasim.benchmarks.timing`: the clock and the B4 timings.
- B1, :mod:`~dasim.benchmarks.dapper_parity`: the classical filters on DAPPER's twin
  experiments, with DAPPER alongside.
- B2, :mod:`~dasim.benchmarks.nonlinear_filtering` (its definition:
  :mod:`~dasim.benchmarks.nonlinear_filtering_cases`): the KDE diffusion filter against
  the EnKF and the particle filters on nonlinear twin experiments.
- B3, :mod:`~dasim.benchmarks.trajectory_smoothing`: the learned assimilators against a
  particle smoother on Lorenz-63 trajectories.
- B4, :mod:`~dasim.benchmarks.timing` and :mod:`~dasim.benchmarks.score_speed`: speed
  and scale.
- :mod:`~dasim.benchmarks.registry`: every case by name (what ``dasim bench CASE`` runs).

Benchmarks are not tests: CI runs a seconds-long smoke version of each
(``dasim bench CASE --smoke``); the full runs and their tables live in
``docs/benchmarks.md``.
"""

from .case import Case, Method
from .dapper_parity import B1_CASES, b1_case, b1_methods
from .report import markdown_table, plot_metric
from .runner import run_case

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
