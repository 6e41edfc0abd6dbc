"""The ensemble Kalman filter: square-root (ETKF / LETKF) and perturbed observations."""

from __future__ import annotations

import numpy as np

from .._inputs import store_params
from .._noise import GaussianNoise
from ._base import SequentialFilter, fill_shared_doc
from ._inflation import check_inflation, finite_size_factor, inflate
from ._localisation import LocalisedMixin

__all__ = ["EnKF"]


@fill_shared_doc
class EnKF(LocalisedMixin, SequentialFilter):
    """Ensemble Kalman filter.

    The analysis works in the joint state-observation (ensemble-space) form, so nonlinear
    observation operators need no Jacobian: with forecast anomalies
    ``A = (E - mean) / sqrt(N-1)`` and whitened observation anomalies
    ``Y = R^{-1/2} (h(E) - mean h) / sqrt(N-1)`` (with ``Y = U S V^T``),

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
    variant uses Schur-product localisation of the gain's covariances. Distances are
    measured between the locations of the state components (``state_coordinates``; by
    default a 1-D grid of unit spacing, a ring when ``periodic=True``) and those of the
    observations (the observation model's ``coordinates``; by default the locations of
    the components it observes), see :mod:`dasim.coordinates`.

    Parameters
    ----------
    %(model_params)s
    n_members : int, default=100
        Ensemble size (at least 2).
    variant : {"sqrt", "stochastic"}, default="sqrt"
        Square-root (ETKF) or perturbed-observation analysis.
    inflation : float, "finite-size" or ("finite-size", float), default=1.0
        A float: multiplicative factor on the analysis anomalies, at least 1 (1: no
        inflation). ``"finite-size"``: the EnKF-N (Bocquet 2011; Bocquet, Raanes and
        Hannart 2015, the dual form), which treats the forecast ensemble's mean and
        covariance as uncertain and inflates the forecast anomalies every cycle by the
        factor that minimises its dual cost, from the innovation and the predicted
        observations' anomalies: about 1 where the observations fall within the
        ensemble's spread, more where they do not, so that no inflation needs tuning.
        The factor is at most 1.2 (``("finite-size", bound)`` sets another bound,
        ``inf`` none; see :class:`KDEDiffusionFilter`, whose default it is). With
        localisation the factor is one global value. The factor used is the
        ``inflation`` diagnostic of each cycle (NaN with a fixed inflation).
    localization_radius : float or None, default=None
        Gaspari-Cohn radius in the units of the state coordinates (grid points by
        default; DAPPER convention, see :func:`dasim.coordinates.gaspari_cohn`);
        ``None`` for a global analysis.
    rotate : bool, default=False
        Apply a random mean-preserving orthogonal rotation to the square-root analysis
        anomalies (costs ``O(N^3)``; opt-in). With many more members than observations
        (e.g. N = 100 on Lorenz-63 observing 3 components) the symmetric transform lets
        a few outlying members build up (Sakov and Oke, 2008) and the square-root filter
        degrades: use ``rotate=True`` or ``variant="stochastic"`` there.
    periodic : bool, default=True
        Whether the default localisation grid (``state_coordinates=None``) is periodic;
        ignored when ``state_coordinates`` is given.
    state_coordinates : Coordinates, array-like of shape (n_state, n_dims) or None, \
default=None
        Locations of the state components for localisation: a
        :class:`~dasim.coordinates.PeriodicGrid1D`, :class:`~dasim.coordinates.Grid2D`,
        :class:`~dasim.coordinates.Points`, or positions as an array (Euclidean
        distance). ``None`` is the 1-D grid ``0, 1, ..., n_state - 1`` (a ring when
        ``periodic``). Checked against ``X`` (and the observation model's
        ``coordinates`` against ``n_obs``) in ``fit``.
    random_state : int, RandomState or None, default=None
        Seed for the initial ensemble, model noise, perturbations and rotations.
    %(noise_params)s

    Attributes
    ----------
    %(fitted_attrs)s
    state_coordinates_ : Coordinates
        The resolved locations of the state components.
    observation_coordinates_ : Coordinates or None
        The resolved locations of the observations (``None`` for a callable operator
        without ``coordinates``: such observations cannot be localised).
    %(mle_attrs)s

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
        state_coordinates=None,
        random_state=None,
        noise="moments",
        forecast_first=True,
    ):
        store_params(self, locals())

    def _check_params(self):
        if self.variant not in ("sqrt", "stochastic"):
            raise ValueError(f"variant must be 'sqrt' or 'stochastic', got {self.variant!r}.")
        check_inflation(self.inflation)
        self._check_localisation()
        if not isinstance(self.rotate, bool | np.bool_):
            raise TypeError(f"rotate must be a bool, got {self.rotate!r}.")

    _needs_loglik = False
    _diagnostics = ("inflation",)

    def _start_run(self, n_members, n_state):
        tapers = self._tapers(("xy", "yy"))
        self._taper_xy, self._taper_yy = tapers["xy"], tapers["yy"]

    def _log_evidence(self, y, predicted, loglik, log_weights):
        """Gaussian predictive ``log N(y; mean h(E), Cov h(E) + R)``: the EnKF's evidence."""
        mask = ~np.isnan(y)
        hx = predicted[:, mask]
        n = hx.shape[0]
        with np.errstate(over="ignore", invalid="ignore"):
            cov = np.atleast_2d(np.cov(hx, rowvar=False)) if n > 1 else 0.0
        cov = cov + self._obs_noise.marginal(mask).covariance
        if not np.all(np.isfinite(cov)):
            return -np.inf
        predictive = GaussianNoise(covariance=cov, name="predictive")
        return float(predictive.log_density(y[mask] - hx.mean(axis=0)))

    def _analysis(self, forecast, y, predicted, loglik, log_weights, rng):
        analysis, _, factor = self._transform(forecast, y, predicted, rng)
        return analysis, None, {"inflation": factor}

    def _transform(self, forecast, y, predicted, rng, past=None):
        """The analysis of one cycle, an ensemble-space transform of the forecast.

        Both variants update every member by a linear map of the ensemble anomalies that
        depends only on the predicted observations, so the same map applies to any other
        columns attached to the members: ``past`` (``(n_members, n_extra)``, e.g. the
        ensembles of earlier times for the ensemble Kalman smoother
        :class:`dasim.smoothers.EnKS`) receives the update the forecast receives, as the
        augmented state of DAPPER's EnKS would. Inflation applies to the forecast columns
        only.
        Localisation (a per-component analysis) has no such shared map: ``past`` must be
        None then.

        Returns
        -------
        analysis : ndarray of shape (n_members, n_state)
        past_analysis : ndarray of shape (n_members, n_extra) or None
        factor : float
            The finite-size factor applied to the forecast anomalies (NaN with a fixed
            ``inflation``, which applies to the analysis).
        """
        n, d = forecast.shape
        if past is not None and self._taper_xy is not None:
            raise ValueError("A localised analysis cannot update past ensembles.")
        bound = check_inflation(self.inflation)
        factor = np.nan
        if bound is not None:  # the EnKF-N: the prior inflated by the finite-size factor
            factor = finite_size_factor(predicted, y, self._obs_noise, bound)
            forecast = inflate(forecast, factor)
            past = None if past is None else inflate(past, factor)
            predicted = self.observation_.apply(forecast)
        states = forecast if past is None else np.concatenate([forecast, past], axis=1)
        mask = ~np.isnan(y)
        yo = y[mask]
        hx = predicted[:, mask]
        noise = self._obs_noise.marginal(mask)
        whiten = noise.whiten  # R^{-1/2} v, rows of v

        if self.variant == "sqrt":
            taper = None if self._taper_xy is None else self._taper_xy[:, mask]
            rotation = (lambda: _random_rotation(n, rng)) if self.rotate else None
            analysis = sqrt_update(states, yo, hx, whiten, taper, rotation)
        else:
            xbar, anom, ybar, yw = _ensemble_space(states, hx, whiten)
            pert = rng.standard_normal((n, yo.size))
            pert -= pert.mean(axis=0)
            if self._taper_xy is None:
                analysis = states + _gain_increments(yw, whiten(yo - hx) + pert, anom)
            else:
                yr = (hx - ybar) / np.sqrt(n - 1)
                cxy = (anom.T @ yr) * self._taper_xy[:, mask]
                cyy = (yr.T @ yr) * self._taper_yy[np.ix_(mask, mask)] + noise.covariance
                innov = yo - hx + noise.colour(pert)
                analysis = forecast + np.linalg.solve(cyy, innov.T).T @ cxy.T
        past_analysis = None
        if past is not None:
            analysis, past_analysis = analysis[:, :d], analysis[:, d:]
        if bound is None and self.inflation != 1.0:
            analysis = inflate(analysis, self.inflation)
        return analysis, past_analysis, factor


def _ensemble_space(states, hx, whiten):
    """Means, scaled anomalies ``A`` and whitened observation anomalies ``Y``."""
    n = states.shape[0]
    xbar = states.mean(axis=0)
    anom = (states - xbar) / np.sqrt(n - 1)
    ybar = hx.mean(axis=0)
    yw = whiten(hx - ybar) / np.sqrt(n - 1)
    return xbar, anom, ybar, yw


def sqrt_update(states, yo, hx, whiten, taper=None, rotation=None):
    """Square-root (ETKF; LETKF with ``taper``) analysis of ``states``.

    ``whiten`` applies ``R^{-1/2}`` to rows, ``taper`` (n_state, n_obs) is the
    Gaspari-Cohn taper of the observed components (None: global), ``rotation`` a callable
    returning a mean-preserving ``N x N`` rotation of the analysis anomalies (or None).
    Shared by :class:`EnKF` and the Kalman stage of the KDE filter's ``kalman_fraction``.
    """
    n = states.shape[0]
    xbar, anom, ybar, yw = _ensemble_space(states, hx, whiten)
    dw = whiten(yo - ybar)
    if taper is None:
        incr, anom_a = _etkf(yw, dw, anom)
    else:
        incr, anom_a = _letkf(yw, dw, anom, np.sqrt(taper))
    if rotation is not None:
        anom_a = rotation() @ anom_a
    return (xbar + incr) + np.sqrt(n - 1) * anom_a


def _eig_psd(a):
    """Eigen-decomposition of a symmetric positive semi-definite matrix (stack)."""
    ev, vec = np.linalg.eigh(a)
    return np.clip(ev, 0.0, None), vec


def _sqrt_factor(ev):
    """``((1 + ev)^{-1/2} - 1) / ev``, written to be exact at ``ev = 0``."""
    r = np.sqrt(1.0 + ev)
    return -1.0 / (r * (1.0 + r))


def _etkf(yw, dw, anom):
    """Global ETKF: mean increment (n_state,) and analysis anomalies (N, n_state).

    Uses the eigen-decomposition of ``Y^T Y`` (n_obs x n_obs) when ``n_obs <= N`` and of
    ``Y Y^T`` (N x N) otherwise, so the cost is ``O(N n_obs min(N, n_obs))``.
    """
    n, m = yw.shape
    if m <= n:
        ev, v = _eig_psd(yw.T @ yw)
        vya = v.T @ (yw.T @ anom)  # (m, d)
        incr = ((dw @ v) / (1.0 + ev)) @ vya
        anom_a = anom + yw @ (v @ (_sqrt_factor(ev)[:, None] * vya))
    else:
        ev, u = _eig_psd(yw @ yw.T)
        ua = u.T @ anom
        w = u @ ((u.T @ (yw @ dw)) / (1.0 + ev))
        incr = w @ anom
        anom_a = anom + u @ ((1.0 / np.sqrt(1.0 + ev) - 1.0)[:, None] * ua)
    return incr, anom_a


def _letkf(yw, dw, anom, sq):
    """LETKF: one tapered ETKF per state component (``sq`` = sqrt taper, (d, m)), batched."""
    n, m = yw.shape
    ya = sq * (yw.T @ anom).T  # (d, m): Y_j^T a_j
    if m <= n:
        gram = (yw.T @ yw)[None] * sq[:, :, None] * sq[:, None, :]
        ev, v = _eig_psd(gram)  # (d, m), (d, m, m)
        vya = np.einsum("dmr,dm->dr", v, ya)
        vdw = np.einsum("dmr,dm->dr", v, sq * dw)
        incr = np.sum(vdw * vya / (1.0 + ev), axis=1)
        inner = np.einsum("dmr,dr->dm", v, _sqrt_factor(ev) * vya)
        anom_a = anom + yw @ (sq * inner).T
    else:
        rho = sq**2
        gram = np.einsum("nm,dm,km->dnk", yw, rho, yw)
        ev, u = _eig_psd(gram)  # (d, N), (d, N, N)
        ua = np.einsum("dnr,nd->dr", u, anom)
        uyd = np.einsum("dnr,nd->dr", u, yw @ (rho * dw).T)
        incr = np.sum(uyd / (1.0 + ev) * ua, axis=1)
        anom_a = anom + np.einsum("dnr,dr->nd", u, (1.0 / np.sqrt(1.0 + ev) - 1.0) * ua)
    return incr, anom_a


def _gain_increments(yw, innov, anom):
    """Perturbed-observation increments ``innov (I + Y^T Y)^{-1} Y^T A`` (rows = members)."""
    n, m = yw.shape
    if m <= n:
        ev, v = _eig_psd(yw.T @ yw)
        return ((innov @ v) / (1.0 + ev)) @ (v.T @ (yw.T @ anom))
    ev, u = _eig_psd(yw @ yw.T)
    return (((innov @ yw.T) @ u) / (1.0 + ev)) @ (u.T @ anom)


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
