r"""Noise schedules of the closed-form KDE diffusion (numpy, vectorised in time).

A forward schedule is the linear SDE :math:`dx = f(t)\, x\, dt + g(t)\, dW` on
:math:`t \in [0, 1]`, whose transition kernel is
:math:`x_t \mid x_0 \sim \mathcal N(\mu(t) x_0, \sigma(t)^2 I)`. Diffusing the Gaussian
kernel density estimate :math:`\frac1N \sum_i \mathcal N(x; x_i, \sigma_x^2 I)` through it
gives the mixture

.. math::

    p_t(x) = \frac1N \sum_i \mathcal N\big(x;\ \mu(t)\, x_i,\ \bar\sigma(t)^2 I\big),
    \qquad \bar\sigma(t)^2 = \mu(t)^2 \sigma_x^2 + \sigma(t)^2 ,

so every schedule here is described by :math:`\mu(t)` and the *total* kernel standard
deviation :math:`\bar\sigma(t)` (what the closed-form score needs), together with the drift
coefficient :math:`f(t)` and the squared diffusion :math:`g^2(t)` (what the reverse samplers
need). The reverse samplers run from ``t_start = 1`` down to ``t_end``; the kernels of the
target at ``t_end`` are :math:`\mathcal N(\mu(t_{end}) x_i, \bar\sigma(t_{end})^2 I)` with
:math:`\bar\sigma(t_{end}) = \sigma_x` (``floor_std``) for every schedule in this module.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["VESchedule", "VPSchedule", "make_schedule"]


def _check_positive_scalar(value, name):
    """Return ``value`` as a float, raising ``ValueError`` unless it is finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}.")
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}.")
    return value


def _as_time(t):
    return np.asarray(t, dtype=np.float64)


def _out(arr):
    """0-d arrays come back as numpy scalars, others unchanged."""
    return arr[()] if arr.ndim == 0 else arr


_T_PARAM = """
        Parameters
        ----------
        t : float or array-like
            Diffusion time(s) in [0, 1].

        Returns
        -------
        numpy.float64 or numpy.ndarray
            Value of {what}, with the shape of ``t``.
"""


def _doc(summary, what):
    return summary + "\n" + _T_PARAM.format(what=what)


class _Schedule:
    """Shared interface: ``mu``, ``sigmabar``, ``sigmabar2``, ``drift``, ``g2``.

    Subclasses implement ``_mu``, ``_sigmabar2``, ``_drift`` and ``_g2`` on float arrays.
    """

    #: start of the reverse flow (noise end).
    t_start = 1.0
    #: the ODE/SDE samplers start from N(0, prior_std^2 I) when False; when True they use
    #: the root-mean-square of the diffused mixture (see ``kde_sampling.reverse_start_std``).
    moment_matched_start = False
    name = "base"

    def mu(self, t):
        return _out(self._mu(_as_time(t)))

    mu.__doc__ = _doc("Mean scale :math:`\\mu(t)` of the transition kernel.", "mu(t)")

    def sigmabar2(self, t):
        return _out(self._sigmabar2(_as_time(t)))

    sigmabar2.__doc__ = _doc(
        "Total kernel variance :math:`\\bar\\sigma(t)^2` of the diffused KDE.", "sigmabar(t)^2"
    )

    def sigmabar(self, t):
        return _out(np.sqrt(self._sigmabar2(_as_time(t))))

    sigmabar.__doc__ = _doc(
        "Total kernel standard deviation :math:`\\bar\\sigma(t)` of the diffused KDE.",
        "sigmabar(t)",
    )

    def drift(self, t):
        return _out(self._drift(_as_time(t)))

    drift.__doc__ = _doc("Drift coefficient :math:`f(t)` of the forward SDE.", "f(t)")

    def g2(self, t):
        return _out(self._g2(_as_time(t)))

    g2.__doc__ = _doc("Squared diffusion coefficient :math:`g(t)^2` of the forward SDE.", "g(t)^2")

    @property
    def prior_std(self):
        """Standard deviation of the Gaussian the reverse flow starts from, sigmabar(1)."""
        return float(self.sigmabar(self.t_start))

    @property
    def floor_std(self):
        """Kernel standard deviation of the target at ``t_end``; equals ``sigma_x``."""
        return float(self.sigmabar(self.t_end))

    @property
    def target_mu(self):
        """Scale ``mu(t_end)`` of the kernel centres of the target at ``t_end``."""
        return float(self.mu(self.t_end))


class VESchedule(_Schedule):
    r"""Variance-exploding schedule with a linear total standard deviation.

    .. math::

        \mu(t) = 1,\quad \bar\sigma(t) = \sigma_x + t(\sigma_{max} - \sigma_x),\quad
        f(t) = 0,\quad g^2(t) = \frac{d\bar\sigma^2}{dt}
        = 2\,\bar\sigma(t)\,(\sigma_{max} - \sigma_x).

    This is the parametrisation of the authors' code: the bandwidth :math:`\sigma_x` is the
    floor :math:`\bar\sigma(0)`, so the reverse flow ends at ``t_end = 0`` with no
    singularity, and the target there is exactly the KDE mixture
    :math:`\sum_i \pi_i \mathcal N(x_i, \sigma_x^2 I)`. The reverse flow starts from
    :math:`\mathcal N(0, \sigma_{max}^2 I)` (``prior_std = sigma_max``).

    Parameters
    ----------
    sigma_x : float
        Kernel bandwidth of the state KDE, > 0.
    sigma_max : float
        Total standard deviation at ``t = 1``; must exceed ``sigma_x``.

    Examples
    --------
    >>> s = VESchedule(0.5, 50.0)
    >>> float(s.sigmabar(0.0)), float(s.sigmabar(1.0)), s.t_end
    (0.5, 50.0, 0.0)
    """

    name = "ve"
    t_end = 0.0

    def __init__(self, sigma_x, sigma_max):
        self.sigma_x = _check_positive_scalar(sigma_x, "sigma_x")
        self.sigma_max = _check_positive_scalar(sigma_max, "sigma_max")
        if self.sigma_max <= self.sigma_x:
            raise ValueError(
                f"sigma_max must exceed sigma_x, got sigma_max={self.sigma_max!r} "
                f"<= sigma_x={self.sigma_x!r}."
            )

    def __repr__(self):
        return f"VESchedule(sigma_x={self.sigma_x!r}, sigma_max={self.sigma_max!r})"

    def _sigmabar(self, t):
        return self.sigma_x + t * (self.sigma_max - self.sigma_x)

    def _mu(self, t):
        return np.ones_like(t)

    def _sigmabar2(self, t):
        return self._sigmabar(t) ** 2

    def _drift(self, t):
        return np.zeros_like(t)

    def _g2(self, t):
        return 2.0 * self._sigmabar(t) * (self.sigma_max - self.sigma_x)


class VPSchedule(_Schedule):
    r"""Variance-preserving schedule with a linear :math:`\beta(t) = \beta_{max} t`.

    .. math::

        \mu(t) = e^{-\beta_{max} t^2 / 4},\quad \sigma(t)^2 = 1 - \mu(t)^2,\quad
        f(t) = -\tfrac12 \beta_{max} t,\quad g^2(t) = \beta_{max} t .

    Two ways of putting the bandwidth floor :math:`\sigma_x` into the flow are offered:

    ``early_stop=False`` (default)
        The KDE kernel is diffused with the data, so
        :math:`\bar\sigma(t)^2 = \mu(t)^2 \sigma_x^2 + \sigma(t)^2`. It reaches the floor
        :math:`\bar\sigma = \sigma_x` exactly at ``t_end = 0`` (there is no singularity
        there: :math:`\bar\sigma(0) = \sigma_x > 0` and :math:`g^2(0) = 0`), and the target
        at ``t_end`` is the same KDE mixture :math:`\sum_i \pi_i \mathcal N(x_i,\sigma_x^2 I)`
        as the VE schedule's, with no shrinkage. This is the recommended form: it avoids
        the jitter-free collapse of the authors' VP code (spec section 1.6, "VP caveat").
    ``early_stop=True``
        The authors' first-draft form: the empirical measure is diffused without the
        kernel, :math:`\bar\sigma(t) = \sigma(t)`, and the flow stops at
        :math:`t_{end} = \sqrt{-2\log(1-\sigma_x^2)/\beta_{max}} > 0` where
        :math:`\sigma(t_{end}) = \sigma_x` (needs :math:`\sigma_x < 1`). The target is
        :math:`\sum_i \pi_i \mathcal N(\mu(t_{end}) x_i, \sigma_x^2 I)` with
        :math:`\mu(t_{end}) = \sqrt{1 - \sigma_x^2}`: the centres are shrunk towards the
        origin (the ensemble mean, in the centred coordinates the samplers use).

    The reverse flow starts from :math:`\mathcal N(0, s^2 I)` where ``s`` is the
    root-mean-square of the diffused mixture at ``t = 1`` (``moment_matched_start``);
    :math:`s \to \bar\sigma(1) \approx 1` (``prior_std``) when :math:`\mu(1)` is small.

    Parameters
    ----------
    sigma_x : float
        Kernel bandwidth, > 0 (< 1 when ``early_stop``).
    beta_max : float, default=50.0
        :math:`\beta(1)`, > 0. With the default 50 of the authors' code,
        :math:`\mu(1) = e^{-12.5}`.
    early_stop : bool, default=False
        Use the early-stopped form described above.

    Examples
    --------
    >>> s = VPSchedule(0.5, 50.0)
    >>> float(s.sigmabar(0.0)), s.t_end
    (0.5, 0.0)
    >>> round(VPSchedule(0.5, 50.0, early_stop=True).t_end, 4)
    0.1073
    """

    name = "vp"
    moment_matched_start = True

    def __init__(self, sigma_x, beta_max=50.0, early_stop=False):
        self.sigma_x = _check_positive_scalar(sigma_x, "sigma_x")
        self.beta_max = _check_positive_scalar(beta_max, "beta_max")
        self.early_stop = bool(early_stop)
        if self.early_stop:
            if self.sigma_x >= 1.0:
                raise ValueError(
                    f"sigma_x must be < 1 for the early-stopped VP schedule, got {self.sigma_x!r}."
                )
            self.t_end = math.sqrt(-2.0 * math.log1p(-(self.sigma_x**2)) / self.beta_max)
            if self.t_end >= 1.0:
                raise ValueError(
                    f"beta_max={self.beta_max!r} is too small for sigma_x={self.sigma_x!r}: "
                    "sigma(t) only reaches sigma_x after t = 1."
                )
        else:
            self.t_end = 0.0

    def __repr__(self):
        return (
            f"VPSchedule(sigma_x={self.sigma_x!r}, beta_max={self.beta_max!r}, "
            f"early_stop={self.early_stop!r})"
        )

    def sigma2(self, t):
        return _out(self._sigma2(_as_time(t)))

    sigma2.__doc__ = _doc(
        "Diffusion variance :math:`\\sigma(t)^2 = 1 - \\mu(t)^2` (computed with ``expm1``).",
        "sigma(t)^2",
    )

    def _mu(self, t):
        return np.exp(-0.25 * self.beta_max * t * t)

    def _sigma2(self, t):
        return -np.expm1(-0.5 * self.beta_max * t * t)

    def _sigmabar2(self, t):
        s2 = self._sigma2(t)
        if self.early_stop:
            return s2
        mu = self._mu(t)
        return mu * mu * self.sigma_x**2 + s2

    def _drift(self, t):
        return -0.5 * self.beta_max * t

    def _g2(self, t):
        return self.beta_max * t


def make_schedule(schedule, *, sigma_x, sigma_max=None, beta_max=50.0):
    """Build a schedule from its name, or pass an instance through.

    Parameters
    ----------
    schedule : {"ve", "vp", "vp-early-stop"} or schedule instance
        Name of the schedule. An instance is returned unchanged (``sigma_x`` etc. ignored).
    sigma_x : float
        Bandwidth floor.
    sigma_max : float, optional
        Total standard deviation at ``t = 1`` of the VE schedule (required for ``"ve"``).
    beta_max : float, default=50.0
        :math:`\\beta(1)` of the VP schedules.

    Returns
    -------
    VESchedule or VPSchedule
        The schedule.

    Examples
    --------
    >>> make_schedule("ve", sigma_x=0.5, sigma_max=50.0)
    VESchedule(sigma_x=0.5, sigma_max=50.0)
    """
    if isinstance(schedule, _Schedule):
        return schedule
    if sigma_x is None:
        raise ValueError("sigma_x is required to build a schedule by name.")
    if schedule == "ve":
        if sigma_max is None:
            raise ValueError("sigma_max is required for schedule='ve'.")
        return VESchedule(sigma_x, sigma_max)
    if schedule == "vp":
        return VPSchedule(sigma_x, beta_max)
    if schedule == "vp-early-stop":
        return VPSchedule(sigma_x, beta_max, early_stop=True)
    raise ValueError(
        f"schedule must be 've', 'vp', 'vp-early-stop' or a schedule instance, got {schedule!r}."
    )
