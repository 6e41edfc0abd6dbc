"""
How many members? A parallel sweep over ensemble sizes
======================================================

How does the analysis error of each filter change with the number of members? We answer
it with :func:`dasim.benchmarks.run_case`. It repeats a twin experiment for every method
and seed: each run simulates its own truth, observations and initial ensemble. The runs
are independent, so ``run_case`` hands them to :class:`joblib.Parallel`. ``n_jobs=2``
runs two at a time on this machine. The same code runs on a cluster when you choose a
different joblib backend (see the end of this page).
"""

# %%
# The case and the methods
# ------------------------
# A :class:`~dasim.benchmarks.Case` bundles the model, the observations and the run
# length. Here it is Lorenz-63 observed in full with noise variance 2, the classic DAPPER
# setting, shortened to 120 cycles. A :class:`~dasim.benchmarks.Method` is a labelled,
# unfitted filter; the runner sets its model, observation and seed. We make one method
# for every pair of filter and ensemble size: the square-root (ETKF) and the
# perturbed-observation EnKF, both with 2 % inflation, and the bootstrap particle filter
# with DAPPER's regularisation settings for this case.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.base import clone

from dasim.benchmarks import Case, Method, run_case
from dasim.filters import EnKF, SIRFilter
from dasim.models import Lorenz63
from dasim.observations import ObservationModel
from dasim.plotting import plot_benchmark

case = Case(
    name="l63-sweep",
    model=Lorenz63(dt=0.01, steps_per_cycle=25),
    observation=ObservationModel("identity", noise_std=np.sqrt(2.0)),
    n_cycles=120,
    burn_in=20,
    description="Lorenz-63, observe all, R=2I, 120 cycles",
)
filters = {
    "EnKF sqrt": EnKF(variant="sqrt", inflation=1.02),
    "EnKF pert-obs": EnKF(variant="stochastic", inflation=1.02),
    "SIR": SIRFilter(jitter=2.4, ess_threshold=0.3),
}
sizes = [10, 30, 100, 300]
configs = [(name, n) for name in filters for n in sizes]
methods = [
    Method(f"{name} N={n}", clone(filters[name]).set_params(n_members=n)) for name, n in configs
]
print(len(methods), "methods x 2 seeds =", 2 * len(methods), "runs")

# %%
# Run them in parallel
# --------------------
# ``run_case`` returns one :class:`xarray.Dataset` with dims ``(method, seed)``. We give
# the ``method`` dimension two coordinates, the filter and its size, and unstack it into
# ``(method, n_members, seed)``: the layout :func:`~dasim.plotting.plot_benchmark`
# expects.
raw = run_case(case, methods, seeds=(0, 1), n_jobs=2)
results = (
    raw.drop_vars("reference")
    .assign_coords(
        filter=("method", [name for name, _ in configs]),
        n_members=("method", [n for _, n in configs]),
    )
    .set_index(method=["filter", "n_members"])
    .unstack("method")
    .rename(filter="method")
)
print(results["rmse"].dims)

# %%
# Time-mean analysis RMSE (mean over seeds) by filter and ensemble size. The observation
# noise has standard deviation ``sqrt(2) = 1.41`` for comparison. The last column is the
# run time per cycle at the largest size.
table = results["rmse"].mean("seed").to_pandas()
table["ms/cycle @300"] = 1000 * results["seconds_per_cycle"].sel(n_members=300).mean("seed")
print(table.round(3).to_string())

# %%
# Observations 0.25 time units apart make this a strongly nonlinear setting, and the
# three filters scale differently with the ensemble size:
#
# - the perturbed-observation EnKF improves up to a few tens of members, then levels
#   off: beyond that the Gaussian form of its update, not the sampling error, limits it;
# - the square-root EnKF does not improve with more members, and is often worse, with a
#   wide scatter over seeds. Its deterministic, symmetric transform lets a few members
#   drift away from the rest as outliers, a known weakness of that form of the update
#   (Sakov and Oke, 2008). A random rotation of the transform (``EnKF(rotate=True)``)
#   removes it;
# - the particle filter collapses with 10 members. From about a hundred members on it
#   beats both EnKFs and keeps improving, since it makes no Gaussian assumption.

# %%
# Plot
# ----
# The line is the seed mean, the error bars one standard deviation over seeds. Two seeds
# give only a rough bar; use more for a real study. The RMSE axis is logarithmic, so
# that the collapsed particle filter at 10 members does not flatten the other lines. The
# dotted lines mark the observation noise (left) and a spread/skill ratio of 1, the mark
# of a well-calibrated ensemble (right).
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
plot_benchmark(results, metric="rmse", x="n_members", ax=axes[0])
plot_benchmark(results, metric="spread_skill", x="n_members", ax=axes[1])
axes[0].set_yscale("log")
axes[0].axhline(np.sqrt(2.0), color="0.5", ls=":", lw=1)
axes[1].axhline(1.0, color="0.5", ls=":", lw=1)
fig.tight_layout()
plt.show()

# %%
# On a cluster
# ------------
# ``run_case`` takes no part in choosing where the runs go: joblib does. To spread a
# larger sweep over a dask cluster (``pip install dasim[dask]``), connect a client and
# select joblib's dask backend. Nothing else changes:
#
# .. code-block:: python
#
#     import joblib
#     from dask.distributed import Client
#
#     client = Client("tcp://scheduler:8786")  # or Client() for a local cluster
#     with joblib.parallel_config(backend="dask"):
#         raw = run_case(case, methods, seeds=range(10))
#
# ``n_jobs=None`` (the default) leaves the number of workers to the active backend.
