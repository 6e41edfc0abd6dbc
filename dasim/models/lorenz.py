"""The Lorenz-63 and Lorenz-96 systems, vectorised over ensembles."""

from __future__ import annotations

import numpy as np

from ._base import ODEModel

__all__ = ["Lorenz63", "Lorenz96"]


class Lorenz63(ODEModel):
    """The Lorenz (1963) system, integrated by RK4.

    .. math::

        \\dot x = \\sigma (y - x), \\quad \\dot y = x (\\rho - z) - y, \\quad
        \\dot z = x y - \\beta z.

    Parameters
    ----------
    sigma, rho, beta : float, default=10, 28, 8/3
        The classical parameters.
    dt : float, default=0.01
        RK4 step.
    steps_per_cycle : int, default=25
        RK4 steps per assimilation cycle (DAPPER's standard ``dto = 0.25``).
    process_noise : float, array or matrix, default=0.0
        Additive Gaussian model noise per cycle (standard deviation(s) or covariance).

    Examples
    --------
    >>> from dasim.models import Lorenz63
    >>> model = Lorenz63(steps_per_cycle=10, process_noise=0.1)
    >>> model.simulate(5, random_state=0).shape
    (5, 3)
    """

    n_state = 3

    def __init__(
        self, sigma=10.0, rho=28.0, beta=8.0 / 3.0, dt=0.01, steps_per_cycle=25, process_noise=0.0
    ):
        self.sigma = sigma
        self.rho = rho
        self.beta = beta
        self.dt = dt
        self.steps_per_cycle = steps_per_cycle
        self.process_noise = process_noise

    def tendency(self, x):
        """Compute the right-hand side of the Lorenz-63 equations.

        Parameters
        ----------
        x : ndarray of shape (..., 3)
            States.

        Returns
        -------
        ndarray of shape (..., 3)
            The tendency ``dx/dt`` at each state.
        """
        a, b, c = x[..., 0], x[..., 1], x[..., 2]
        out = np.empty_like(x)
        out[..., 0] = self.sigma * (b - a)
        out[..., 1] = a * (self.rho - c) - b
        out[..., 2] = a * b - self.beta * c
        return out

    def _initial_guess(self, n, rng):
        return np.array([0.0, 0.0, 25.0]) + rng.standard_normal((n, 3)) * np.array([8, 9, 8.6])


class Lorenz96(ODEModel):
    """The Lorenz (1996) system in any dimension ``n >= 4``, integrated by RK4.

    .. math::

        \\dot x_j = (x_{j+1} - x_{j-2}) x_{j-1} - x_j + F, \\quad j \\text{ cyclic}.

    Parameters
    ----------
    n : int, default=40
        Number of variables (at least 4).
    forcing : float, default=8.0
        The forcing ``F``.
    dt : float, default=0.05
        RK4 step.
    steps_per_cycle : int, default=1
        RK4 steps per assimilation cycle.
    process_noise : float, array or matrix, default=0.0
        Additive Gaussian model noise per cycle.

    Examples
    --------
    >>> from dasim.models import Lorenz96
    >>> Lorenz96(n=10).climatology(4, random_state=0).shape
    (4, 10)
    """

    def __init__(self, n=40, forcing=8.0, dt=0.05, steps_per_cycle=1, process_noise=0.0):
        self.n = n
        self.forcing = forcing
        self.dt = dt
        self.steps_per_cycle = steps_per_cycle
        self.process_noise = process_noise

    @property
    def n_state(self):
        """State dimension ``n``."""
        n = self.n
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 4:
            raise ValueError(f"n must be an integer >= 4, got {n!r}.")
        return int(n)

    def tendency(self, x):
        """Compute the right-hand side of the Lorenz-96 equations.

        Parameters
        ----------
        x : ndarray of shape (..., n)
            States.

        Returns
        -------
        ndarray of shape (..., n)
            The tendency ``dx/dt`` at each state.
        """
        # Cyclic neighbours from one padded copy: xp[j] = x[j-2], so x[j+1] = xp[j+3],
        # x[j-2] = xp[j] and x[j-1] = xp[j+1].
        xp = np.concatenate([x[..., -2:], x, x[..., :1]], axis=-1)
        return (xp[..., 3:] - xp[..., :-3]) * xp[..., 1:-2] - x + self.forcing

    def _check_params(self):
        super()._check_params()  # also validates n through n_state
        if isinstance(self.forcing, bool) or not np.isfinite(self.forcing):
            raise ValueError(f"forcing must be a finite number, got {self.forcing!r}.")

    def _initial_guess(self, n, rng):
        return self.forcing + rng.standard_normal((n, self.n_state))
