"""B1: classical parity with DAPPER's standard twin experiments.

Settings and the figures DAPPER reports for them (analysis RMSE, time mean), kept beside
the code as DAPPER keeps its settings files. ``dasim bench l63-full`` runs one.
"""

from __future__ import annotations

import numpy as np

from ..filters import EnKF, SIRFilter
from ..models import Lorenz63, Lorenz96
from ..observations import ObservationModel
from ._runner import Case, Method

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
            Method(
                "EnKF sqrt N=10 infl=1.02 rotate",
                EnKF(n_members=10, inflation=1.02, rotate=True),
                0.557,
            ),
            # Tuned on seeds 100-104 (inflation 1.02-1.12, with and without rotation).
            Method(
                "EnKF sqrt N=10 infl=1.06 rotate",
                EnKF(n_members=10, inflation=1.06, rotate=True),
                0.557,
            ),
            Method(
                "EnKF pert-obs N=100 infl=1.02",
                EnKF(n_members=100, variant="stochastic", inflation=1.02),
                0.552,
            ),
            Method(
                "SIR N=100 jitter=2.4 ess<0.3",
                SIRFilter(n_members=100, jitter=2.4, ess_threshold=0.3),
                0.364,
            ),
            # Tuned on seeds 100-104 (jitter 1.6-2.8 x ESS threshold 0.2-0.8).
            Method(
                "SIR N=100 jitter=2.4 ess<0.2",
                SIRFilter(n_members=100, jitter=2.4, ess_threshold=0.2),
                0.364,
            ),
            Method(
                "SIR N=1000 jitter=0.9 ess<0.2",
                SIRFilter(n_members=1000, jitter=0.9, ess_threshold=0.2),
                0.260,
            ),
            # Tuned on seeds 100-104 (jitter 0.6-1.6 x ESS threshold 0.2-0.8): the most
            # accurate setting that never lost the attractor there.
            Method(
                "SIR N=1000 jitter=1.2 ess<0.2",
                SIRFilter(n_members=1000, jitter=1.2, ess_threshold=0.2),
                0.260,
            ),
            Method("SIR N=1000 no jitter", SIRFilter(n_members=1000), 10.6),
        ]
    elif name == "l96-40":
        methods = [
            Method("EnKF sqrt N=40 infl=1.02", EnKF(n_members=40, inflation=1.02), 0.18),
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
        jitter, ess = 0.8, 0.2
        methods = [
            Method(
                "EnKF sqrt N=100 infl=1.02 rotate",
                EnKF(n_members=100, inflation=1.02, rotate=True),
                ref_enkf,
            ),
            Method(
                f"SIR N=1000 jitter={jitter} ess<{ess}",
                SIRFilter(n_members=1000, jitter=jitter, ess_threshold=ess),
                ref_pf,
            ),
        ]
    else:
        b1_case(name)  # raises for unknown names
    if members is not None:
        members = {int(m) for m in members}
        methods = [m for m in methods if m.estimator.n_members in members]
    return methods
