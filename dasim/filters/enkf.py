"""The ensemble Kalman filter: square-root (ETKF / LETKF) and perturbed observations."""

from __future__ import annotations

import numbers

import numpy as np

from ._base import SequentialFilter
from ._localization import gaspari_cohn, grid_distances

__all__ = ["EnKF"]


class EnKF(SequentialFilter):
    """Ensemble Kalman filter.

    The analysis works in the joint state-observation (ensemble-space) form, so nonlinear
    observation operators need no Jacobian: with forecast anomalies
    ``A = (E - mean) / sqrt(N-1)`` and whitened observation anomalies
    ``Y = R^{-1/2} (h(E) - mean h) / sqrt(N-1)`` (thin SVD ``Y = U S V^T``),

    - ``variant="sqrt"`` (ETKF, Hunt et al. 2007): the mean moves by ``w^T A`` with
      ``w = U S (I + S^2)^{-1} V^T R^{-1/2} (y - mean h)`` and the anomalies by the
      symmetric, mean-preserving square root ``T^{1/2} = I + U((I+S^2)^{-1/2} - I)U^T`` of
      ``(I + Y Y^T)^{-1}``. The SVD is taken over ``min(N, n_obs)``, so the cost is
      ``O(N n_obs min(N, n_obs))`` and no ``N x N`` matrix is formed unless ``rotate=True``.
    - ``variant="stochastic"``: each member is updated with the Kalman gain towards the
      observation plus a centred perturbation drawn from the observation noise (Burgers et
      al. 1998), ``K = A^T Y (I + Y^T Y)^{-1} R^{-1/2}``.

    The per-cycle ``log_evidence`` is the EnKF's Gaussian predictive density
    ``N(y; mean h(E), Cov h(E) + R)``.

    Multiplicative inflation scales the analysis anomalies by ``inflation`` (DAPPER's
    convention: 1.02 inflates the covariance by 1.02^2). With ``localization_radius`` the
    square-root variant becomes the LETKF (one local analysis per state component, all
    vectorised, observations tapered by Gaspari-Cohn in ``R^{-1}``) and the stochastic
    variant uses Schur-product localisation of the gain's covariances; state components
    and observed components sit on a 1-D grid (a ring when ``periodic=True``).

    Parameters
    ----------
    model : DynamicalModel, callable or None, default=None
        The dynamics; ``None`` is a persistence model with noise learned in ``fit``.
    observation : ObservationModel or None, default=None
        Observation operator and noise; ``None`` observes the first ``y.shape[1]``
        components with noise learned in ``fit``.
    n_members : int, default=100
        Ensemble size (at least 2).
    variant : {"sqrt", "stochastic"}, default="sqrt"
        Square-root (ETKF) or perturbed-observation analysis.
    inflation : float, default=1.0
        Multiplicative factor on the analysis anomalies (positive).
    localization_radius : float or None, default=None
        Gaspari-Cohn radius in grid points (DAPPER convention, see
        :func:`dasim.filters.gaspari_cohn`); ``None`` for a global analysis.
    rotate : bool, default=False
        Apply a random mean-preserving orthogonal rotation to the square-root analysis
        anomalies (costs ``O(N^3)``; opt-in).
    periodic : bool, default=True
        Whether the localisation grid is periodic.
    random_state : int, RandomState or None, default=None
        Seed for the initial ensemble, model noise, perturbations and rotations.

    Attributes
    ----------
    model_ : DynamicalModel
        The resolved dynamical model.
    observation_ : ObservationModel
        The resolved observation model.
    n_obs_ : int
        Number of observed components.
    n_features_in_ : int
        State dimension.
    climatology_ : ndarray of shape (n_times, n_state)
        Training states defining the climatological prior.
    climatology_kernel_ : ndarray of shape (n_state, n_state)
        Square-root kernel covariance of the prior KDE.

    See Also
    --------
    SIRFilter : Bootstrap particle filter.
    KDEDiffusionFilter : Closed-form conditional diffusion filter.

    Examples
    --------
    >>> from dasim.datasets import make_twin_experiment
    >>> from dasim.filters import EnKF
    >>> from dasim.models import Lorenz63
    >>> from dasim.observations import ObservationModel
    >>> model, obs = Lorenz63(), ObservationModel(noise_std=2.0)
    >>> X, y = make_twin_experiment(model, obs, 200, random_state=0)
    >>> enkf = EnKF(model, obs, n_members=20, inflation=1.02, random_state=0).fit(X, y)
    >>> ds = enkf.assimilate(y)
    >>> ds["analysis"].dims
    ('time', 'member', 'state')
    """

    def __init__(
        self,
        model=None,
        observation=None,
        n_members=100,
        variant="sqrt",
        inflation=1.0,
        localization_radius=None,
        rotate=False,
        periodic=True,
        random_state=None,
    ):
        self.model = model
        self.observation = observation
        self.n_members = n_members
        self.variant = variant
        self.inflation = inflation
        self.localization_radius = localization_radius
        self.rotate = rotate
        self.periodic = periodic
        self.random_state = random_state

    def _check_params(self):
        if self.variant not in ("sqrt", "stochastic"):
            raise ValueError(f"variant must be 'sqrt' or 'stochastic', got {self.variant!r}.")
        infl = self.inflation
        if isinstance(infl, bool) or not isinstance(infl, numbers.Real) or not infl > 0:
            raise ValueError(f"inflation must be a positive number, got {infl!r}.")
        rad = self.localization_radius
        if rad is not None and (
            isinstance(rad, bool) or not isinstance(rad, numbers.Real) or not rad > 0
        ):
            raise ValueError(f"localization_radius must be positive or None, got {rad!r}.")
        for name in ("rotate", "periodic"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}.")

    def _start_run(self, n_members, n_state):
        self._taper_xy = self._taper_yy = None
        if self.localization_radius is None:
            return
        if callable(self.observation_.operator):
            raise ValueError(
                "localization_radius needs a componentwise observation operator (a built-in "
                "operator with indices) to place observations on the grid."
            )
        obs_pos = self.observation_.selected(n_state)
        rad = float(self.localization_radius)
        self._taper_xy = gaspari_cohn(
            grid_distances(np.arange(n_state), obs_pos, n_state, self.periodic), rad
        )
        self._taper_yy = gaspari_cohn(grid_distances(obs_pos, obs_pos, n_state, self.periodic), rad)

    def _log_evidence(self, y, predicted, loglik, weights):
        """Gaussian predictive ``log N(y; mean h(E), Cov h(E) + R)``: the EnKF's evidence."""
        mask = ~np.isnan(y)
        hx = predicted[:, mask]
        n = hx.shape[0]
        with np.errstate(over="ignore", invalid="ignore"):
            cov = np.atleast_2d(np.cov(hx, rowvar=False)) if n > 1 else 0.0
        cov = cov + self.observation_.noise_cov(y.shape[0])[np.ix_(mask, mask)]
        if not np.all(np.isfinite(cov)):
            return -np.inf
        chol = np.linalg.cholesky(cov)
        white = np.linalg.solve(chol, y[mask] - hx.mean(axis=0))
        return float(
            -0.5 * (white @ white + mask.sum() * np.log(2 * np.pi))
            - np.sum(np.log(np.diag(chol)))
        )

    def _analysis(self, forecast, y, predicted, loglik, weights, rng):
        n = forecast.shape[0]
        mask = ~np.isnan(y)
        yo = y[mask]
        hx = predicted[:, mask]
        cov = self.observation_.noise_cov(y.shape[0])[np.ix_(mask, mask)]
        chol = np.linalg.cholesky(cov)

        def whiten(v):  # R^{-1/2} v for rows of v
            return np.linalg.solve(chol, v.T).T if v.ndim == 2 else np.linalg.solve(chol, v)

        xbar = forecast.mean(axis=0)
        anom = (forecast - xbar) / np.sqrt(n - 1)
        ybar = hx.mean(axis=0)
        yw = whiten(hx - ybar) / np.sqrt(n - 1)
        if self.variant == "sqrt":
            dw = whiten(yo - ybar)
            if self._taper_xy is None:
                mean, anom_a = _etkf(anom, yw, dw)
                mean = xbar + mean
            else:
                mean, anom_a = _letkf(anom, yw, dw, self._taper_xy[:, mask])
                mean = xbar + mean
            if self.rotate:
                anom_a = _random_rotation(n, rng) @ anom_a
            analysis = mean + np.sqrt(n - 1) * anom_a
        else:
            pert = rng.standard_normal((n, yo.size))
            pert -= pert.mean(axis=0)
            if self._taper_xy is None:
                innov = whiten(yo - hx) + pert
                u, s, vt = np.linalg.svd(yw, full_matrices=False)
                analysis = forecast + ((innov @ vt.T) * (s / (1.0 + s**2))) @ (u.T @ anom)
            else:
                yr = (hx - ybar) / np.sqrt(n - 1)
                cxy = (anom.T @ yr) * self._taper_xy[:, mask]
                cyy = (yr.T @ yr) * self._taper_yy[np.ix_(mask, mask)] + cov
                innov = yo - hx + pert @ chol.T
                analysis = forecast + np.linalg.solve(cyy, innov.T).T @ cxy.T
        if self.inflation != 1.0:
            m = analysis.mean(axis=0)
            analysis = m + self.inflation * (analysis - m)
        return analysis, None, {}


def _etkf(anom, yw, dw):
    """Global ETKF: mean increment and analysis anomalies."""
    u, s, vt = np.linalg.svd(yw, full_matrices=False)
    w = u @ ((s / (1.0 + s**2)) * (vt @ dw))
    mean_incr = w @ anom
    anom_a = anom + u @ ((1.0 / np.sqrt(1.0 + s**2) - 1.0)[:, None] * (u.T @ anom))
    return mean_incr, anom_a


def _letkf(anom, yw, dw, taper):
    """LETKF: one tapered ETKF per state component, batched."""
    sq = np.sqrt(taper)  # (n_state, m)
    ylocal = yw[None, :, :] * sq[:, None, :]  # (n_state, N, m)
    dlocal = dw[None, :] * sq  # (n_state, m)
    u, s, vt = np.linalg.svd(ylocal, full_matrices=False)  # u (d,N,r) s (d,r) vt (d,r,m)
    coef = (s / (1.0 + s**2)) * np.einsum("drm,dm->dr", vt, dlocal)
    w = np.einsum("dnr,dr->dn", u, coef)  # (d, N)
    mean_incr = np.einsum("dn,nd->d", w, anom)
    proj = np.einsum("dnr,nd->dr", u, anom)  # U^T a_j
    fac = 1.0 / np.sqrt(1.0 + s**2) - 1.0
    anom_a = anom + np.einsum("dnr,dr->nd", u, fac * proj)
    return mean_incr, anom_a


def _random_rotation(n, rng):
    """A random orthogonal ``n x n`` matrix that keeps the vector of ones fixed."""
    q, r = np.linalg.qr(rng.standard_normal((n - 1, n - 1)))
    q *= np.sign(np.diag(r))
    # Orthonormal basis whose first vector is ones / sqrt(n) (Householder reflection).
    e = np.zeros(n)
    e[0] = 1.0
    v = np.ones(n) / np.sqrt(n) - e
    h = np.eye(n) - 2.0 * np.outer(v, v) / (v @ v) if np.any(v) else np.eye(n)
    block = np.eye(n)
    block[1:, 1:] = q
    return h @ block @ h.T
