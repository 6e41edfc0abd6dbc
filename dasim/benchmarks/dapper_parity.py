"""B1, DAPPER parity: the classical filters on DAPPER's standard twin experiments.

Settings and the figures DAPPER reports for them (analysis RMSE, time mean), kept beside
the code as DAPPER keeps its settings files. ``dasim bench l63-full`` runs one
(:func:`~dasim.benchmarks.run_case`); with ``--dapper-python PATH`` DAPPER itself runs
alongside, in a subprocess of that interpreter (``dapper_accuracy.py`` and
``dapper_timing.py`` beside this module; DAPPER never enters dasim's environment).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..filters import EnKF, SIRFilter
from ..models import Lorenz63, Lorenz96
from ..observations import ObservationModel
from .case import Case, Method

__all__ = ["B1_CASES", "b1_case", "b1_methods"]


def _l96(n):
    return Case(
        name=f"l96-{n}",
        model=Lorenz96(n=n, forcing=8.0, dt=0.05, steps_per_cycle=1),
        observation=ObservationModel("identity", noise_std=1.0),
        n_cycles=1000,
        burn_in=400,
        description=f"Lorenz-96 n={n}, F=8, RK4 dt=0.05, 1 step a cycle, observe all, R=I; "
        "DAPPER's start N(e_1, 0.001 I) and burn-in (20 time units)",
        initial_mean=np.eye(n)[0],
        initial_var=0.001,
    )


B1_CASES = {
    "l63-full": Case(
        name="l63-full",
        model=Lorenz63(dt=0.01, steps_per_cycle=25),
        observation=ObservationModel("identity", noise_std=np.sqrt(2.0)),
        n_cycles=1000,
        burn_in=64,
        description="Lorenz-63, RK4 dt=0.01, 25 steps a cycle, observe all, R=2I, no model "
        "noise; DAPPER's start N((1.509, -1.531, 25.46), 2 I) and burn-in (16 time units)",
        initial_mean=np.array([1.509, -1.531, 25.46]),
        initial_var=2.0,
    ),
    "l96-40": _l96(40),
    "l96-10": _l96(10),
    "l96-20": _l96(20),
}


def b1_case(name):
    """Return the B1 case called ``name``.

    Parameters
    ----------
    name : {"l63-full", "l96-40", "l96-10", "l96-20"}
        Case name.

    Returns
    -------
    Case
        The twin-experiment setting (an entry of ``B1_CASES``).

    Examples
    --------
    >>> from dasim.benchmarks import b1_case
    >>> b1_case("l96-40").model
    Lorenz96()
    """
    try:
        return B1_CASES[name]
    except KeyError:
        raise ValueError(f"unknown B1 case {name!r}; choose from {sorted(B1_CASES)}.") from None


def _etkf(n_members, inflation, reference, rotate=False):
    """The square-root EnKF, labelled as DAPPER's scripts (``dapper_*.py``) label it."""
    label = f"EnKF sqrt N={n_members} infl={inflation}" + " rotate" * rotate
    estimator = EnKF(n_members=n_members, inflation=inflation, rotate=rotate)
    return Method(label, estimator, reference)


def _sir(n_members, jitter, ess_threshold, reference):
    """The regularised SIR filter, labelled as DAPPER's scripts label it."""
    label = f"SIR N={n_members} jitter={jitter} ess<{ess_threshold}"
    estimator = SIRFilter(n_members=n_members, jitter=jitter, ess_threshold=ess_threshold)
    return Method(label, estimator, reference)


def b1_methods(name, members=None):
    """Return the filters of a B1 case with DAPPER's reference figures.

    Parameters
    ----------
    name : str
        Case name.
    members : sequence of int, optional
        Restrict to configurations with these ensemble sizes.

    Returns
    -------
    list of Method
        Configured methods; ``reference`` is DAPPER's analysis RMSE (None where DAPPER
        reports only a collapse).

    Examples
    --------
    >>> from dasim.benchmarks import b1_methods
    >>> [m.estimator.n_members for m in b1_methods("l63-full", members=[10])]
    [10, 10]
    """
    if name == "l63-full":
        methods = [
            _etkf(10, 1.02, 0.557, rotate=True),
            # Tuned on seeds 100-104 (inflation 1.02-1.12, with and without rotation).
            _etkf(10, 1.06, 0.557, rotate=True),
            Method(
                "EnKF pert-obs N=100 infl=1.02",
                EnKF(n_members=100, variant="stochastic", inflation=1.02),
                0.552,
            ),
            _sir(100, 2.4, 0.3, 0.364),
            # Tuned on seeds 100-104 (jitter 1.6-2.8 x ESS threshold 0.2-0.8).
            _sir(100, 2.4, 0.2, 0.364),
            _sir(1000, 0.9, 0.2, 0.260),
            # Tuned on seeds 100-104 (jitter 0.6-1.6 x ESS threshold 0.2-0.8): the most
            # accurate setting that never lost the attractor there.
            _sir(1000, 1.2, 0.2, 0.260),
            Method("SIR N=1000 no jitter", SIRFilter(n_members=1000), 10.6),
        ]
    elif name == "l96-40":
        methods = [
            _etkf(40, 1.02, 0.18),
            Method(
                "LETKF N=20 radius=4 infl=1.01",
                EnKF(n_members=20, inflation=1.01, localization_radius=4.0),
                0.20,
            ),
            Method("SIR N=1000 no jitter", SIRFilter(n_members=1000), 4.9),
        ]
    elif name in ("l96-10", "l96-20"):
        ref_enkf, ref_pf = (0.159, 0.143) if name == "l96-10" else (0.177, 0.229)
        # Jitter and ESS threshold tuned on seeds 100, 101 (1000 cycles, DAPPER's start);
        # on L96-20 the tuned 0.5 / 0.5 lost the track on 1 of 10 seeds in DAPPER as in
        # dasim, so both cases use the robust 0.8 / 0.2.
        methods = [_etkf(100, 1.02, ref_enkf, rotate=True), _sir(1000, 0.8, 0.2, ref_pf)]
    else:
        b1_case(name)  # raises for unknown names
    if members is not None:
        members = {int(m) for m in members}
        methods = [m for m in methods if m.estimator.n_members in members]
    return methods


# ------------------------------------------------------------------ DAPPER alongside
def _run_dapper(python, script, args, what):
    """Run one of DAPPER's helper scripts; its last JSON line, or {} if it failed."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [python, str(Path(__file__).parent / script), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        print(f"DAPPER {what} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return {}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def _dapper_timings(python, case, n_cycles, repeats=1):
    """DAPPER's seconds per cycle, ``{label: seconds}`` (fastest of ``repeats`` runs)."""
    out = _run_dapper(python, "dapper_timing.py", [case, n_cycles, repeats], "timing")
    return out.get(case, {})


def _dapper_accuracy(python, case, seeds):
    """DAPPER's own time-mean analysis RMSE per seed, ``{label: [rmse, ...]}``."""
    out = _run_dapper(python, "dapper_accuracy.py", [case, *seeds], "accuracy run")
    return out.get(case, {})


def _add_dapper_runs(ds, python, case, n_cycles, seeds, accuracy=True):
    """Put DAPPER's runs of a B1 case beside a :func:`run_case` result, in place.

    ``dapper_seconds_per_cycle[LABEL]`` attributes (its timings over ``n_cycles``) and,
    with ``accuracy``, a ``dapper_rmse`` variable ``(method, seed)``: DAPPER's own RMSE
    on the same seed numbers (its own random streams), NaN where it has no counterpart.
    """
    for key, value in _dapper_timings(python, case, n_cycles).items():
        ds.attrs[f"dapper_seconds_per_cycle[{key}]"] = value
    if accuracy:
        found = _dapper_accuracy(python, case, seeds)
        rmse = np.full((ds.sizes["method"], len(seeds)), np.nan)
        for i, label in enumerate(ds["method"].values):
            if str(label) in found:
                rmse[i] = found[str(label)]
        ds["dapper_rmse"] = (("method", "seed"), rmse)


def _add_dapper_timings(ds, python, case, n_cycles, repeats):
    """Put DAPPER's ms a cycle beside a ``time_filters`` result, in place."""
    timings = _dapper_timings(python, case, n_cycles, repeats)
    theirs = np.full(ds["seconds_per_cycle"].shape, np.nan)
    for i, label in enumerate(ds["filter"].values):
        for j, n in enumerate(ds["n_members"].values):
            theirs[i, j] = timings.get(f"{label} N={int(n)}", np.nan)
    ds["dapper_seconds_per_cycle"] = (("filter", "n_members"), theirs)
    ds.attrs["dapper"] = "dapper_timing.py in " + python
