r"""The joint-covariance kernel: a KDE of states and predicted observations, conditioned.

The paper's filter builds a KDE of the pairs :math:`(x_i, y_i)` with a block-diagonal
kernel, :math:`\sigma_x^2 I` in :math:`x` and :math:`\sigma_y^2 I` in :math:`y`, so that
conditioning on :math:`y^*` only reweights the members. With a kernel shaped by the
*joint* covariance of states and predicted observations the conditional is still a
Gaussian mixture in closed form, and each kernel is also moved toward the observation:

Let :math:`h_i = \mathcal H(x_i)` (the operator, a black box), :math:`m` and :math:`C` the
mean and covariance of the pairs :math:`(x_i, h_i)`, :math:`h` the relative bandwidth and
:math:`a = \sqrt{1 - h^2}` (with shrinkage; 1 without). The joint KDE
:math:`\frac1N \sum_i \mathcal N\big((x, \eta);\ m + a((x_i, h_i) - m),\ h^2 C\big)`, with
:math:`y = \eta + e`, :math:`e \sim \mathcal N(0, R)`, conditioned on :math:`y = y^*`, is

.. math::

    p(x \mid y^*) = \sum_i w_i\, \mathcal N(x;\ \mu_i,\ \Sigma),\qquad
    S = h^2 C_{hh} + R,\quad G = h^2 C_{xh} S^{-1},

.. math::

    \mu_i = \tilde x_i + G\,(y^* - \tilde h_i),\qquad
    \Sigma = h^2 C_{xx} - G\, h^2 C_{hx},\qquad
    w_i \propto \mathcal N(y^*;\ \tilde h_i,\ S),

with :math:`(\tilde x_i, \tilde h_i)` the shrunk centres. As :math:`h \to 0` it is the
weighted KDE of the exact likelihood (a particle filter); at :math:`h \to 1` with
shrinkage every centre is the mean and the conditional is the Gaussian
:math:`\mathcal N(m_x + G(y^* - m_h), \Sigma)` of the Kalman update with the ensemble's
covariances, the ensemble Kalman filter's analysis distribution. In between it is the
Gaussian mixture filter that bridges the two (Hoteit et al. 2008; Stordal et al. 2011).
The mixture is sampled by the same closed-form samplers as every other kernel, in the
coordinates that whiten :math:`\Sigma`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from ._kde_kernel import _Whitened, _whitening
from .kde import _check_log_weights, _check_matrix

__all__ = ["JointKernel"]


class JointKernel(_Whitened):
    r"""The KDE conditional of a joint-covariance kernel over states and observations.

    See the module docstring for the formulas.

    Parameters
    ----------
    X : array-like of shape (N, d)
        Forecast ensemble (finite).
    H : array-like of shape (N, p)
        Predicted noise-free observations :math:`h_i` of the observed components (finite).
    y : array-like of shape (p,)
        The observation :math:`y^*` (finite: drop unobserved components first).
    noise : array-like of shape (p,) or (p, p)
        Observation noise: standard deviations, or the covariance :math:`R`
        (positive definite).
    bandwidth : float
        The relative bandwidth :math:`h`, in ``(0, 1)`` with ``shrink``, > 0 otherwise.
    shrink : bool, default=True
        Shrink the centres toward the mean by :math:`\sqrt{1 - h^2}`, so that the joint
        mixture has the ensemble's mean and covariance.
    rank_rtol : float, default=1e-10
        Eigenvalues of :math:`\Sigma` below this times the largest count as zero.

    Attributes
    ----------
    means : numpy.ndarray of shape (N, d)
        The conditional kernel means :math:`\mu_i`.
    log_w : numpy.ndarray of shape (N,)
        The normalised log-weights :math:`\log w_i`.
    cov : numpy.ndarray of shape (d, d)
        The conditional kernel covariance :math:`\Sigma`.
    gain : numpy.ndarray of shape (d, p)
        :math:`G`.
    centre : numpy.ndarray of shape (d,)
        The origin of the whitened coordinates (the unweighted mean of the means).
    sqrt_cov : numpy.ndarray of shape (d, r)
        :math:`B` with :math:`B B^\top = \Sigma`.
    whiten : numpy.ndarray of shape (r, d)
        :math:`W` with :math:`W \Sigma W^\top = I_r`.
    rank : int
        :math:`r`, the rank of :math:`\Sigma`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 2))
    >>> k = JointKernel(X, X[:, :1], np.array([1.0]), np.array([0.5]), 0.999)
    >>> mean, cov = k.mixture_moments()
    >>> bool(np.allclose(mean, k.means.mean(0)))  # near h = 1 every weight is equal
    True
    """

    _origin = "centre"

    def __init__(self, X, H, y, noise, bandwidth, *, shrink=True, rank_rtol=1e-10):
        X = _check_matrix(X, "X")
        H = _check_matrix(H, "H")
        if H.shape[0] != X.shape[0]:
            raise ValueError(f"H must have {X.shape[0]} rows (members), got {H.shape[0]}.")
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (H.shape[1],) or not np.all(np.isfinite(y)):
            raise ValueError(f"y must be finite with shape ({H.shape[1]},), got {y.shape}.")
        R = _noise_cov(noise, H.shape[1])
        h = float(bandwidth)
        if not (math.isfinite(h) and h > 0) or (shrink and h >= 1):
            bound = "in (0, 1) with shrink=True" if shrink else "positive and finite"
            raise ValueError(f"bandwidth must be {bound}, got {bandwidth!r}.")
        n = X.shape[0]
        a = math.sqrt(1.0 - h * h) if shrink else 1.0
        mx, mh = X.mean(axis=0), H.mean(axis=0)
        ax, ah = X - mx, H - mh
        h2 = h * h
        cxx, cxh, chh = (ax.T @ ax) / n, (ax.T @ ah) / n, (ah.T @ ah) / n
        S = h2 * chh + R
        S = 0.5 * (S + S.T)
        chol = np.linalg.cholesky(S)
        # G = h^2 C_xh S^-1, via the Cholesky factor of S (positive definite: R is).
        self.gain = np.linalg.solve(chol.T, np.linalg.solve(chol, h2 * cxh.T)).T
        xt, ht = mx + a * ax, mh + a * ah
        innov = y - ht
        self.means = xt + innov @ self.gain.T
        white = np.linalg.solve(chol, innov.T).T
        log_w = -0.5 * np.sum(white**2, axis=1)
        self.log_w = log_w - logsumexp(log_w)
        cov = h2 * cxx - self.gain @ (h2 * cxh.T)
        self.cov = 0.5 * (cov + cov.T)
        self.sqrt_cov, self.whiten, self.rank = _whitening(self.cov, rank_rtol)
        self.centre = self.means.mean(axis=0)
        self.bandwidth, self.shrink_factor = h, a

    def latent_centres(self):
        r"""The kernel means in the coordinates that whiten :math:`\Sigma`.

        Returns
        -------
        numpy.ndarray of shape (N, r)
            :math:`W (\mu_i - c)`.
        """
        return (self.means - self.centre) @ self.whiten.T

    def mixture_moments(self, log_w=None):
        r"""Mean and covariance of the conditional mixture.

        Parameters
        ----------
        log_w : array-like of shape (N,), optional
            Log-weights to use instead of :attr:`log_w` (e.g. tempered ones).

        Returns
        -------
        mean : numpy.ndarray of shape (d,)
            :math:`\sum_i w_i \mu_i`.
        cov : numpy.ndarray of shape (d, d)
            :math:`\Sigma + \sum_i w_i (\mu_i - \bar\mu)(\mu_i - \bar\mu)^\top`.
        """
        lw = self.log_w if log_w is None else _check_log_weights(log_w, self.means.shape[0])
        w = np.exp(lw - logsumexp(lw))
        mean = w @ self.means
        dev = self.means - mean
        return mean, self.cov + (dev * w[:, None]).T @ dev


def _noise_cov(noise, p):
    R = np.asarray(noise, dtype=np.float64)
    if R.ndim == 0:
        R = np.full(p, float(R))
    if R.ndim == 1:
        if R.shape != (p,) or not np.all(np.isfinite(R)) or np.any(R <= 0):
            raise ValueError(f"noise standard deviations must be {p} positive numbers.")
        return np.diag(R**2)
    if R.shape != (p, p) or not np.all(np.isfinite(R)):
        raise ValueError(f"noise covariance must be a finite ({p}, {p}) matrix.")
    return R
