"""The covariance-shaped state kernel of the KDE filter and ESS-targeted tempering.

The public names are documented, and imported, from :mod:`dasim.diffusion.kde_sampling`.
"""

from __future__ import annotations

import math

import numpy as np

from dasim.diffusion._kde_sampler_utils import _normalised_weights
from dasim.diffusion.kde import _check_log_weights, _check_matrix, effective_sample_size


def _fill_query_params(method):
    """Put the query parameters ``score`` and ``log_density`` share into the docstring."""
    if method.__doc__:  # None under python -OO
        method.__doc__ = method.__doc__.replace("        %(query_params)s\n", _QUERY_PARAMS)
    return method


_QUERY_PARAMS = """\
        x : array-like of shape (M, d)
            Query states.
        t : float
            Diffusion time.
        log_w : array-like of shape (N,) or None
            Observation log-weights.
"""


def _whitening(cov, rank_rtol):
    """``B`` (d, r), ``W`` (r, d) and ``r``: ``B B^T = cov``, ``W cov W^T = I_r``.

    From the eigendecomposition of the symmetric ``cov`` restricted to its eigenvalues
    above ``rank_rtol`` times the largest (none when the largest is not positive).
    """
    evals, evecs = np.linalg.eigh(cov)
    keep = evals > rank_rtol * max(float(evals[-1]), 0.0)
    if evals[-1] <= 0:
        keep[:] = False
    root = np.sqrt(evals[keep])
    return evecs[:, keep] * root, (evecs[:, keep] / root).T, int(keep.sum())


class _Whitened:
    """A kernel sampled in whitened coordinates: ``sqrt_cov`` (:math:`B`) maps them back
    to states around the origin named by ``_origin`` (an attribute name)."""

    _origin = "mean"

    def from_latent(self, z):
        """Map whitened coordinates back to states, :math:`x = o + B z`.

        :math:`o` is the kernel's origin (the weighted mean :math:`m` of the covariance
        kernel, the mean :math:`c` of the kernel means of the joint kernel).

        Parameters
        ----------
        z : array-like of shape (M, r)
            Whitened coordinates.

        Returns
        -------
        numpy.ndarray of shape (M, d)
            The states.
        """
        return getattr(self, self._origin) + np.asarray(z, dtype=np.float64) @ self.sqrt_cov.T


class CovarianceKernel(_Whitened):
    r"""The covariance-shaped state kernel, with variance-preserving shrinkage of the centres.

    The regularised particle filter's kernel: the bandwidth matrix is :math:`h^2 C`, with
    :math:`C = \sum_i \pi_i (x_i - m)(x_i - m)^\top` the weighted forecast covariance and
    :math:`m = \sum_i \pi_i x_i` the weighted mean. With ``shrink=True`` the centres are
    shrunk toward :math:`m` by :math:`a = \sqrt{1 - h^2}` (Liu and West 2001), so that the
    target mixture

    .. math::

        \sum_i \pi_i\, \mathcal N\big(m + a (x_i - m),\ h^2 C\big)

    has exactly the weighted ensemble's mean :math:`m` and covariance
    :math:`a^2 C + h^2 C = C`: the kernel no longer widens the ensemble cycle after cycle.

    The samplers run in whitened coordinates :math:`z = W (x - m)`, :math:`W =
    \Lambda_r^{-1/2} V_r^\top` from the eigendecomposition :math:`C = V \Lambda V^\top`
    restricted to its :math:`r` non-zero eigenvalues, where the kernel is isotropic with
    bandwidth :math:`h`: the existing closed-form score, ODE, SDE and mixture samplers
    (numpy and torch) serve unchanged, and :math:`x = m + B z` with :math:`B = V_r
    \Lambda_r^{1/2}` maps their output back. The diffusion in :math:`z` is a forward
    process with noise covariance :math:`\sigma(t)^2 C` in :math:`x` (a preconditioning, as
    in EDM); every sampler still ends on the mixture above. Directions in which the
    weighted ensemble has no spread (:math:`r < d`, e.g. ``N <= d``) carry none in the
    analysis either.

    Parameters
    ----------
    X : array-like of shape (N, d)
        Forecast ensemble (finite).
    log_w : array-like of shape (N,) or None
        Observation log-weights (None: uniform).
    bandwidth : float
        The relative bandwidth :math:`h`, in ``(0, 1)`` when ``shrink=True``, > 0 otherwise.
    shrink : bool, default=True
        Shrink the centres by :math:`\sqrt{1 - h^2}` (variance-preserving).
    rank_rtol : float, default=1e-10
        Eigenvalues below ``rank_rtol`` times the largest count as zero.

    Attributes
    ----------
    mean : numpy.ndarray of shape (d,)
        The weighted mean :math:`m`.
    cov : numpy.ndarray of shape (d, d)
        The weighted covariance :math:`C`.
    sqrt_cov : numpy.ndarray of shape (d, r)
        :math:`B`, with :math:`B B^\top = C`.
    whiten : numpy.ndarray of shape (r, d)
        :math:`W`, with :math:`W C W^\top = I_r`.
    centres : numpy.ndarray of shape (N, r)
        The (shrunk) centres in whitened coordinates, :math:`a\, W (x_i - m)`.
    shrink_factor : float
        :math:`a` (1 without shrinkage).
    rank : int
        :math:`r`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 2)) @ np.array([[2.0, 0.0], [1.0, 0.5]])
    >>> k = CovarianceKernel(X, None, 0.5)
    >>> mean, cov = k.mixture_moments(None)
    >>> bool(np.allclose(cov, k.cov)), k.rank
    (True, 2)
    """

    def __init__(self, X, log_w, bandwidth, *, shrink=True, rank_rtol=1e-10):
        X = _check_matrix(X, "X")
        log_w = _check_log_weights(log_w, X.shape[0])
        h = float(bandwidth)
        if not (math.isfinite(h) and h > 0):
            raise ValueError(f"bandwidth must be positive and finite, got {bandwidth!r}.")
        if shrink and h >= 1:
            raise ValueError(
                f"bandwidth must be below 1 with shrink=True (the centres are shrunk by "
                f"sqrt(1 - h^2)), got {bandwidth!r}."
            )
        pi = _normalised_weights(log_w)
        self.bandwidth = h
        self.mean = pi @ X
        anomalies = X - self.mean
        self.cov = (anomalies * pi[:, None]).T @ anomalies
        self.sqrt_cov, self.whiten, self.rank = _whitening(self.cov, rank_rtol)
        self.shrink_factor = math.sqrt(1.0 - h * h) if shrink else 1.0
        self.centres = self.shrink_factor * (anomalies @ self.whiten.T)

    def to_latent(self, x):
        """Map states to whitened coordinates, :math:`z = W (x - m)`.

        Parameters
        ----------
        x : array-like of shape (M, d)
            States.

        Returns
        -------
        numpy.ndarray of shape (M, r)
            Their whitened coordinates.
        """
        return (np.asarray(x, dtype=np.float64) - self.mean) @ self.whiten.T

    def mixture_moments(self, log_w):
        r"""Mean and covariance of the target mixture, in state coordinates.

        Parameters
        ----------
        log_w : array-like of shape (N,) or None
            The log-weights the kernel was built with.

        Returns
        -------
        mean : numpy.ndarray of shape (d,)
            :math:`\sum_i \pi_i c_i`, the weighted mean of the shrunk centres :math:`c_i`.
        cov : numpy.ndarray of shape (d, d)
            :math:`\sum_i \pi_i c_i c_i^\top - m m^\top + h^2 C` with the shrunk centres
            :math:`c_i`.
        """
        pi = _normalised_weights(_check_log_weights(log_w, self.centres.shape[0]))
        c = self.from_latent(self.centres)
        mean = pi @ c
        dev = c - mean
        return mean, (dev * pi[:, None]).T @ dev + self.bandwidth**2 * self.cov

    @_fill_query_params
    def score(self, x, t, log_w, schedule, **kwargs):
        r"""State-space score of the diffused covariance-kernel KDE (full rank only).

        :math:`s_x(x, t) = W^\top s_z(W (x - m), t)`, with :math:`s_z` the isotropic
        closed-form score (:func:`dasim.diffusion.kde.kde_score`) of the whitened centres.

        Parameters
        ----------
        %(query_params)s
        schedule : VESchedule or VPSchedule
            The schedule in whitened units (``sigma_x`` is the bandwidth :math:`h`).
        **kwargs
            Passed to :func:`~dasim.diffusion.kde.kde_score`.

        Returns
        -------
        numpy.ndarray of shape (M, d)
            The score at ``x``.
        """
        from dasim.diffusion.kde import kde_score

        self._check_full_rank()
        return kde_score(self.to_latent(x), t, self.centres, log_w, schedule, **kwargs) @ (
            self.whiten
        )

    @_fill_query_params
    def log_density(self, x, t, log_w, schedule, **kwargs):
        r"""State-space log-density of the diffused covariance-kernel KDE (full rank only).

        :math:`\log p_x(x, t) = \log p_z(W (x - m), t) + \log\lvert\det W\rvert`.

        Parameters
        ----------
        %(query_params)s
        schedule : VESchedule or VPSchedule
            The schedule in whitened units.
        **kwargs
            Passed to :func:`~dasim.diffusion.kde.kde_log_density`.

        Returns
        -------
        numpy.ndarray of shape (M,)
            The log-density at ``x``.
        """
        from dasim.diffusion.kde import kde_log_density

        self._check_full_rank()
        log_det = float(np.linalg.slogdet(self.whiten)[1])
        return kde_log_density(self.to_latent(x), t, self.centres, log_w, schedule, **kwargs) + (
            log_det
        )

    def _check_full_rank(self):
        if self.rank != self.mean.shape[0]:
            raise ValueError(
                f"the weighted covariance has rank {self.rank} < {self.mean.shape[0]}: the "
                "state-space density is singular (sample in the whitened coordinates)."
            )


def tempered_log_weights(log_lik, target_ess, *, max_exponent=None, n_bisect=60):
    r"""Tempered log-weights :math:`\beta \ell_i` whose ESS meets a target.

    Finds the largest exponent :math:`\beta` (at most ``max_exponent``) such that the
    effective sample size of :math:`\operatorname{softmax}(\beta \ell)` is at least
    ``target_ess``: the ESS of tempered weights decreases as :math:`\beta` grows (its
    derivative in :math:`\beta` is :math:`2\,\mathrm{ESS}\,(\bar\ell_{\pi^2} -
    \bar\ell_{\pi}) \le 0`), so bisection on :math:`\log\beta` converges. For Gaussian
    log-likelihoods in units of the observation noise, :math:`\beta = 1/c^2` is the
    observation bandwidth :math:`\sigma_y = c\,R^{1/2}`: the smallest bandwidth that keeps
    the weights from collapsing.

    Parameters
    ----------
    log_lik : array-like of shape (N,)
        Untempered log-weights :math:`\ell_i` (finite, or ``-inf``).
    target_ess : float
        The ESS to keep, in ``[1, N]``.
    max_exponent : float, optional
        Upper bound of :math:`\beta` (e.g. 1: never sharper than the likelihood). Default:
        no bound but the bisection's range (:math:`10^{8}`).
    n_bisect : int, default=60
        Bisection steps on :math:`\log\beta`.

    Returns
    -------
    log_w : numpy.ndarray of shape (N,)
        :math:`\beta \ell`.
    exponent : float
        :math:`\beta`.

    Examples
    --------
    >>> ell = -0.5 * np.linspace(0.0, 10.0, 50) ** 2
    >>> log_w, beta = tempered_log_weights(ell, 25.0)
    >>> round(effective_sample_size(log_w), 6)
    25.0
    """
    ell = np.asarray(log_lik, dtype=np.float64)
    if ell.ndim != 1:
        raise ValueError(f"log_lik must be 1-D, got shape {ell.shape}.")
    ell = _check_log_weights(ell, ell.shape[0])
    n = ell.shape[0]
    target = float(target_ess)
    if not (1.0 <= target <= n):
        raise ValueError(f"target_ess must be in [1, {n}], got {target_ess!r}.")
    hi_cap = 1e8 if max_exponent is None else float(max_exponent)
    if not (math.isfinite(hi_cap) and hi_cap > 0):
        raise ValueError(f"max_exponent must be positive and finite, got {max_exponent!r}.")
    finite = np.isfinite(ell)
    # Shift so that the best member has log-weight 0: tempering is then well scaled.
    ell = np.where(finite, ell - ell[finite].max(), -np.inf)

    def ess(beta):
        return effective_sample_size(np.where(finite, beta * ell, -np.inf))

    if ess(hi_cap) >= target:
        return np.where(finite, hi_cap * ell, -np.inf), hi_cap
    lo = min(hi_cap, 1.0)
    while ess(lo) < target and lo > 1e-300:
        lo *= 1e-3
    hi = hi_cap if ess(lo) >= target else lo
    if hi == lo:  # even the flattest finite weights miss the target (members at -inf)
        return np.where(finite, 0.0, -np.inf), 0.0
    lo_l, hi_l = math.log(lo), math.log(hi)
    for _ in range(n_bisect):
        mid = 0.5 * (lo_l + hi_l)
        if ess(math.exp(mid)) >= target:
            lo_l = mid
        else:
            hi_l = mid
    beta = math.exp(lo_l)
    return np.where(finite, beta * ell, -np.inf), beta
