"""Named parameter sets of :class:`~dasim.filters.KDEDiffusionFilter`.

Each is a plain dict of constructor arguments, used as
``KDEDiffusionFilter(model, obs, **KDEDiffusionFilter.PAPER_PARAMS)``. Each names every
parameter it relies on, so that it means the same whatever the class defaults become.
"""

from __future__ import annotations

#: The paper's configuration (Binder, Dasgupta and Oberai 2026), kept runnable as one
#: parameter set: ``KDEDiffusionFilter(model, obs, **KDEDiffusionFilter.PAPER_PARAMS)``.
PAPER_PARAMS = {
    "kernel": "isotropic",
    "shrink": False,
    "bandwidth_x": "scott",
    "bandwidth_y": 1.0,
    "schedule": "ve",
    "sampler": "ode",
    "rtol": 1e-5,
    "atol": 1e-5,
    "likelihood": "simulated",
    "ode_solver": "rk45",
    "kalman_fraction": 0.0,
    "flow_start": "noise",
    "inflation": 1.0,
}

#: For posteriors with several modes, e.g. an observation that cannot tell ``x`` from
#: ``-x``: ``KDEDiffusionFilter(model, obs, **KDEDiffusionFilter.MULTIMODAL_PARAMS)``.
#: No Gaussian step (``kalman_fraction=0``: it would move every mode by one linear
#: update); the members moved by the flow of a narrow kernel (Scott's rule times 0.25,
#: so that the modes stay apart), with 200 steps a flow, so that a member that crosses
#: between modes lands where the flow sends it; the exact likelihood tempered, in a cycle
#: where it would leave the weights an ESS below ``N / 2``, to the exponent that keeps
#: that ESS (``bandwidth_y="ess"``), so that one cycle's weights cannot empty a mode;
#: at small N the ESS is held higher, at ``N m / (N + m)`` with ``m = 100`` (0.8 N at
#: N = 25, 0.67 N at 50; ``ess_target=("drift", 100, 0.5)``), so that a mode's share
#: drifts by a variance of at most ``p (1 - p) / 100`` a cycle at every N.
#: On unimodal posteriors it is worse than the defaults and loses track with few
#: members (B2's ``l63-atan`` at N <= 100); see the user guide.
MULTIMODAL_PARAMS = {
    "kernel": "isotropic",
    "bandwidth_x": ("scott", 0.25),
    "bandwidth_y": "ess",
    "ess_target": ("drift", 100, 0.5),
    "max_stages": 1,
    "likelihood": "known",
    "sampler": "ode",
    "ode_solver": "ab3",
    "ode_steps": 200,
    "kalman_fraction": 0.0,
    "flow_start": "members",
    "inflation": 1.0,
    "localization_radius": None,
}
