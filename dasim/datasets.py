"""Data sets: twin experiments (a true trajectory and its simulated observations) and
real series shipped with dasim (:func:`load_nile`)."""

from __future__ import annotations

from importlib import resources

import numpy as np
import xarray as xr

from ._random import as_generator
from .models import as_model
from .observations import ObservationModel

__all__ = ["make_twin_experiment", "load_nile"]


def make_twin_experiment(
    model,
    observation,
    n_times,
    random_state=None,
    *,
    initial_state=None,
    process_noise=True,
    missing_every=None,
):
    """Simulate a true trajectory and noisy observations of it.

    Parameters
    ----------
    model : DynamicalModel or callable
        The dynamics (see :mod:`dasim.models`).
    observation : ObservationModel
        The observation operator and noise.
    n_times : int
        Number of assimilation cycles (rows).
    random_state : int, numpy.random.Generator, RandomState or None
        Seed or generator for the initial state, model noise and observation noise.
    initial_state : array-like of shape (n_state,), optional
        The state one cycle before the first row; a climatology draw by default.
    process_noise : bool, default=True
        Whether the truth receives the model's process noise.
    missing_every : int, optional
        If given, only every ``missing_every``-th row is observed; the others are NaN
        (forecast-only cycles).

    Returns
    -------
    X_true : ndarray of shape (n_times, n_state)
        The true states.
    y : ndarray of shape (n_times, n_obs)
        The observations, NaN where not observed.

    Examples
    --------
    >>> from dasim.datasets import make_twin_experiment
    >>> from dasim.models import Lorenz63
    >>> from dasim.observations import ObservationModel
    >>> X, y = make_twin_experiment(Lorenz63(), ObservationModel(noise_std=2.0), 10, 0)
    >>> X.shape, y.shape
    ((10, 3), (10, 3))
    """
    model = as_model(model)
    if not isinstance(observation, ObservationModel):
        raise TypeError(f"observation must be an ObservationModel, got {observation!r}.")
    rng = as_generator(random_state)
    X = model.simulate(
        n_times, random_state=rng, initial_state=initial_state, process_noise=process_noise
    )
    y = observation.simulate(X, random_state=rng)
    if missing_every is not None:
        if not isinstance(missing_every, int) or missing_every < 1:
            raise ValueError(f"missing_every must be a positive integer, got {missing_every!r}.")
        mask = (1 + np.arange(n_times)) % missing_every != 0
        y[mask] = np.nan
    return X, y


def load_nile():
    """Load the annual flow of the river Nile at Aswan, 1871-1970.

    The classic local-level series (Cobb 1978; the running example of Durbin and Koopman,
    *Time Series Analysis by State Space Methods*, 2012; R's ``datasets::Nile``): 100
    annual volumes in units of 10^8 m^3, with a drop in level around 1899 (the first
    Aswan dam). The values ship with dasim (``dasim/data/nile.csv``); nothing is
    downloaded.

    The exact Kalman filter of the local-level model ``y_t = mu_t + eps_t``,
    ``mu_{t+1} = mu_t + eta_t`` with a diffuse prior on ``mu_1`` gives the
    maximum-likelihood variances ``sigma_eps^2 = 15099`` and ``sigma_eta^2 = 1469.1``
    and log-likelihood -632.54 on this series.

    Returns
    -------
    xarray.DataArray of shape (100,)
        The flow, named ``"flow"``, with dimension ``time`` whose coordinate holds the
        years (1871 to 1970, integers) and ``attrs`` giving the units and the source.
        ``assimilate`` takes it as ``y`` directly and labels its output's ``time`` with
        the years; ``.to_numpy()`` gives the plain values and ``.to_pandas()`` a
        :class:`pandas.Series`.

    See Also
    --------
    make_twin_experiment : Simulated observations of a known model.

    References
    ----------
    .. [1] G. W. Cobb (1978), "The problem of the Nile: conditional solution to a
       changepoint problem", Biometrika 65(2), 243-251.
    .. [2] J. Durbin and S. J. Koopman (2012), *Time Series Analysis by State Space
       Methods*, 2nd ed., Oxford University Press, chapter 2.

    Examples
    --------
    >>> from dasim.datasets import load_nile
    >>> nile = load_nile()
    >>> nile.shape, int(nile["time"][0]), int(nile["time"][-1])
    ((100,), 1871, 1970)
    >>> round(float(nile.mean()), 2)
    919.35
    """
    path = resources.files("dasim") / "data" / "nile.csv"
    lines = [
        line.strip()
        for line in path.read_text(encoding="ascii").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if lines[0] != "year,flow":  # pragma: no cover - guards the shipped file
        raise RuntimeError(f"dasim/data/nile.csv has an unexpected header {lines[0]!r}.")
    rows = [line.split(",") for line in lines[1:]]
    years = np.array([int(year) for year, _ in rows], dtype=np.int64)
    flow = np.array([float(value) for _, value in rows], dtype=np.float64)
    return xr.DataArray(
        flow,
        dims=("time",),
        coords={"time": years},
        name="flow",
        attrs={
            "long_name": "annual flow of the Nile at Aswan",
            "units": "1e8 m^3",
            "source": (
                "Cobb (1978), Biometrika 65(2), 243-251; Durbin and Koopman (2012), Time "
                "Series Analysis by State Space Methods; R datasets::Nile"
            ),
        },
    )
