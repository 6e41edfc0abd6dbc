"""The closed-form conditional diffusion filter (Binder, Dasgupta and Oberai, 2026)."""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from .._inputs import store_params
from .._torch import resolve_device
from .._validation import check_positive
from ..exceptions import WeightCollapseWarning
from ._base import SequentialFilter, fill_shared_doc
from ._ess_target import check_ess_target, ess_count
from ._inflation import check_inflation, finite_size_factor, inflate
from ._kde_global import (
    _NOISE_RULES,
    _RULES,
    _check_bandwidth,
    _noise_units,
    _relative_bandwidth,
    _resolve_bandwidth,
    observation_weights,
    progressive_analysis,
    transport_analysis,
)
from ._kde_kalman import check_kalman_fraction
from ._kde_params import MULTIMODAL_PARAMS, PAPER_PARAMS
from ._localisation import LocalisedMixin

__all__ = ["KDEDiffusionFilter", "PAPER_PARAMS", "MULTIMODAL_PARAMS"]


@fill_shared_doc
class KDEDiffusionFilter(LocalisedMixin, SequentialFilter):
    """Closed-form conditional diffusion filter (training-free, black-box).

    Each cycle the forecast ensemble ``x_i`` and simulated observations
    ``y_i = h(x_i) + e_i`` define a joint Gaussian KDE
    ``p(x, y) = 1/N sum_i N(x; x_i, sigma_x^2 I) N(y; y_i, sigma_y^2 I)``. Diffusing it in
    ``x`` only gives the closed-form conditional score

    .. math::

        s(x, t \\mid y^*) = \\sum_i \\bar w_i \\frac{\\mu(t) x_i - x}{\\bar\\sigma(t)^2},
        \\qquad \\bar w = \\operatorname{softmax}_i\\Big[
        -\\frac{\\lVert x - \\mu(t) x_i\\rVert^2}{2\\bar\\sigma(t)^2}
        -\\frac{\\lVert y^* - y_i\\rVert^2}{2\\sigma_y^2}\\Big],

    and the analysis ensemble is drawn by integrating the reverse probability-flow ODE
    from noise at ``t = 1`` to ``t = 0`` (adaptive RK45, the paper's sampler), by the
    reverse SDE, or exactly from the ``t = 0`` target, the Gaussian mixture
    ``sum_i pi_i N(x_i, sigma_x^2 I)`` with ``pi_i`` proportional to
    ``N(y*; y_i, sigma_y^2 I)`` (``sampler="mixture"``, O(N)). The ensemble is centred
    before the flow and its mean restored after, as in the authors' code. The score is
    evaluated with log-sum-exp in memory-bounded chunks, on numpy or torch.

    In distribution the filter is a weighted resample with Gaussian jitter: the weights are
    a one-sample estimate of the likelihood with inflated noise ``R + sigma_y^2 I``
    (``likelihood="simulated"``, black-box), or the exact likelihood with noise-free
    ``h(x_i)`` (``likelihood="known"``).

    That is the paper's filter, kept as one parameter set: ``KDEDiffusionFilter(model, obs,
    **KDEDiffusionFilter.PAPER_PARAMS)``. The defaults are the configuration the
    benchmarks found to track wherever the EnKF tracks (the user guide, "The KDE
    diffusion filter: configurations"), the transported KDE filter: a square-root Kalman
    step (ETKF) first assimilates at least half of the likelihood, and more in a cycle
    where the rest would leave the weights an effective sample size below
    ``ess_target * n_members`` (the adaptive ensemble Kalman particle filter's split);
    then the probability flow of the isotropic KDE (Scott's bandwidth, the exact
    likelihood, the fixed-step ``"ab3"`` solver) moves the members themselves under the
    rest of the likelihood (``flow_start="members"``): each member is encoded by the
    forward flow of the unweighted KDE and decoded by the reverse flow of the weighted
    one, so nothing is resampled and the kernel adds no spread (members do not move where
    the weights are uniform). 40 score evaluations a cycle. For posteriors with several
    modes the Gaussian step is the wrong tool: ``**KDEDiffusionFilter.MULTIMODAL_PARAMS``
    leaves it out and keeps the modes apart (the user guide, "Several modes").

    Parameters
    ----------
    model : DynamicalModel, callable or None, default=None
        The dynamics; ``None`` is a persistence model with noise learned in ``fit``.
    observation : ObservationModel or None, default=None
        Observation operator and noise (used as a black-box simulator of ``y_i``, and for
        the weights when ``likelihood="known"``).
    n_members : int, default=250
        Ensemble size (at least 2).
    bandwidth_x : float, {"scott", "silverman"} or (rule, factor), default="scott"
        State bandwidth. With ``kernel="isotropic"``: ``sigma_x``, absolute, a rule
        recomputed from every forecast ensemble (the rule's factor times the root mean
        variance), or a multiple of a rule, e.g. ``("scott", 0.5)``. With
        ``kernel="covariance"``: the relative bandwidth ``h`` of the kernel ``h^2 C``, a
        number (below 1 with ``shrink``) or a rule's dimensionless constant ``c(N, d)``
        (times a factor), which depends on ``n_members`` and the state dimension only,
        never on the ensemble's spread, so it cannot feed back on itself.
    bandwidth_y : float, {"scott", "silverman", "noise", "ess"} or (rule, factor), \
default="noise"
        Observation bandwidth ``sigma_y``. A float is absolute (observation units) and
        the rules ``"scott"``/``"silverman"`` apply to the simulated observations (the
        paper's choices). ``"noise"`` or ``("noise", c)`` is ``c R^(1/2)``, in units of the
        observation noise (the weights are the Gaussian log-likelihood of ``y*`` given the
        simulated ``y_i`` under ``R``, divided by ``c^2``). ``"ess"`` picks ``c`` each
        cycle as the smallest value that keeps the weights' effective sample size at
        least ``ess_target * n_members`` (bisection on the tempered log-weights): the
        weights cannot collapse. With ``likelihood="known"`` only ``"ess"`` is used (it
        tempers the exact likelihood, never sharpening it); other values are ignored.
    sigma_max : float or None, default=None
        VE schedule's total standard deviation at ``t = 1`` (must exceed ``sigma_x``).
        ``None``: ten times the larger of the forecast ensemble's root-mean-square
        distance to its mean and ``sigma_x``, per cycle.
    schedule : {"ve", "vp", "vp-early-stop"}, default="ve"
        Diffusion schedule (see :mod:`dasim.diffusion.schedules`); ``"vp"`` ends on the
        same mixture as ``"ve"``, ``"vp-early-stop"`` is the authors' first VP form.
    sampler : {"ode", "sde", "mixture"}, default="ode"
        Reverse probability-flow ODE (solved by ``ode_solver``), reverse SDE
        (Euler-Maruyama, ``n_steps``), or the exact mixture sample.
    rtol, atol : float, default=1e-5
        Tolerances of the adaptive RK45 integrator.
    likelihood : {"simulated", "known"}, default="known"
        Weights from noisy simulated observations and ``bandwidth_y`` (the paper), or
        from the exact Gaussian log-likelihood of noise-free ``h(x_i)``.
    device : {"auto", "numpy", "cpu", "cuda"} or str, default="auto"
        ``"numpy"``: the float64 numpy reference; ``"cpu"``/``"cuda"``/``"cuda:1"``:
        torch on that device; ``"auto"``: torch on CUDA when torch and a GPU are
        available, numpy otherwise. Resolved in ``fit`` to ``device_``; a device this
        machine does not have (or ``"mps"``, which has no float64) is an error there.
    random_state : int, RandomState or None, default=None
        Seed.
    n_steps : int, default=1000
        Steps of the SDE sampler.
    beta_max : float, default=50.0
        ``beta(1)`` of the VP schedules.
    chunk_size : int or None, default=None
        Members per chunk of the score (``None``: chosen from a memory budget).
    ess_warning : float, default=0.01
        Warn when the weights' effective sample size falls below
        ``max(2, ess_warning * n_members)`` (weight collapse: one member carries almost all
        the mass; consider a larger ``bandwidth_y``); 0 never warns.
    %(noise_params)s
    kernel : {"isotropic", "covariance", "joint"}, default="isotropic"
        State kernel: ``sigma_x^2 I`` (the paper's) or ``h^2 C``, the weighted forecast
        covariance scaled by the relative bandwidth (the regularised particle filter's
        kernel; :class:`~dasim.diffusion.kde_sampling.CovarianceKernel`). The same kernel
        serves the closed-form score of the ODE and SDE samplers and the mixture sampler.
        ``"joint"`` (with ``likelihood="known"``): the kernel ``h^2`` times the joint
        covariance of the states and their predicted observations, conditioned on the
        observation in closed form, so that each kernel also moves toward the
        observation (:class:`~dasim.diffusion.kde_joint.JointKernel`): a particle filter
        as ``h -> 0``, the ensemble Kalman analysis as ``h -> 1`` with ``shrink``.
    shrink : bool or None, default=None
        ``None``: True with ``kernel="covariance"`` or ``"joint"``, False otherwise. With
        ``kernel="covariance"`` or ``"joint"``: shrink the kernel centres toward the weighted mean
        by ``sqrt(1 - h^2)`` (Liu and West 2001), so that the analysis mixture has exactly
        the weighted ensemble's mean and covariance and the kernel does not widen the
        ensemble cycle after cycle. With ``localization_radius`` (isotropic kernel): the
        same per state component, toward its local weighted mean, so that each
        component's local mixture keeps the local weighted mean and variance.
    ess_target : float, ("drift", m) or ("drift", m, c), default=0.9
        With an adaptive ``kalman_fraction`` (the default) or ``bandwidth_y="ess"``: the
        effective sample size (ESS) the weights are kept at. A float in ``(0, 1]`` is a
        fraction of ``n_members``. The default keeps the weights near uniform, handing
        the Kalman step what they cannot carry (0.75 is ``KDE-transport``'s; below 0.9
        the filter lost a 40-dimensional case at N = 50 that the EnKF tracks).
        ``("drift", m)``, ``m > 0``, keeps ``1/ESS - 1/N`` at ``1/m`` (an ESS of
        ``N m / (N + m)``). Reweighting moves the share ``p`` of any part of the
        ensemble (the members on one mode, say) by a variance of about
        ``p (1 - p) (1/ESS - 1/N)`` a cycle, so this form bounds that drift at
        ``p (1 - p) / m`` whatever N, where a fraction ``c`` bounds it at
        ``p (1 - p) (1/c - 1) / N``, loose at small N. ``("drift", m, c)`` applies
        both bounds: the ESS is the larger of ``c N`` and ``N m / (N + m)``.
        ``MULTIMODAL_PARAMS`` uses ``("drift", 100, 0.5)``.
    max_stages : int, default=1
        Progressive correction (Musso, Oudjane and Le Gland 2001), with
        ``likelihood="known"`` and ``bandwidth_y="ess"``: the analysis assimilates the
        likelihood in up to ``max_stages`` tempered stages, each with the largest exponent
        that keeps the ESS at ``ess_target * n_members`` and a fresh draw of the KDE
        conditional, until the exponents add up to 1. The ``bandwidth_y`` diagnostic is
        ``1/sqrt`` of the exponent assimilated (1 when all of it was), ``n_stages`` the
        stages used. With ``localization_radius``: per state component, each with its own
        exponents (the diagnostic averages ``1/sqrt`` over the components).
    ode_solver : {"rk45", "heun", "ab2", "ab3"}, default="ab3"
        Solver of the probability-flow ODE (``sampler="ode"``): adaptive RK45 (``rtol``,
        ``atol``; the paper's), or a fixed-step exponential integrator in the log of the
        noise level, on a geometric grid from ``sigma_max`` down to the kernel floor
        ``sigma_x``: ``"heun"`` (second order, two score evaluations a step), ``"ab2"`` or
        ``"ab3"`` (multistep, order 2 or 3, one score evaluation a step). See
        :func:`~dasim.diffusion.kde_sampling.sample_ode` and the user guide's "Samplers".
    ode_steps : int or None, default=None
        Steps of a fixed-step ODE solver; ``None``: 20 score evaluations a cycle (10 steps
        of ``"heun"``, 20 of ``"ab2"``/``"ab3"``). Ignored by ``"rk45"``.
    localization_radius : float or None, default=None
        Localised analysis (``sampler="ode"``, ``kernel="isotropic"``): each state
        component is updated with the observations within this Gaspari-Cohn radius (their
        log-likelihood terms tapered into local weights) and a state distance tapered the
        same way, by the probability flow of the localised score
        (:mod:`dasim.diffusion.kde_local`; the user guide's "Localisation"). Same units
        and locations as :class:`EnKF`'s; ``inf`` gives back the global filter. Needs a
        diagonal observation noise unless ``bandwidth_y`` is absolute or a rule.
        With ``bandwidth_y="ess"`` each component's weights are tempered to the ESS
        target. ``None``: the global filter.
    periodic : bool, default=True
        Whether the default localisation grid (``state_coordinates=None``) is periodic;
        ignored when ``state_coordinates`` is given.
    state_coordinates : Coordinates, array-like of shape (n_state, n_dims) or None, \
default=None
        Locations of the state components for localisation (see :class:`EnKF`); ``None``
        is the 1-D grid ``0, ..., n_state - 1`` (a ring when ``periodic``).
    score_dtype : {"float64", "float32"}, default="float64"
        Precision of the pairwise kernel computations of the closed-form score (ODE and
        SDE samplers, global or localised): ``"float32"`` is about 1.4 times faster on
        CPU and holds the oracle tests (the flow stays within about 1e-5 of float64's);
        the solver state, the sums across tiles and the analysis stay float64. Ignored
        by ``sampler="mixture"``.
    inflation : float, "finite-size" or ("finite-size", float), default="finite-size"
        Multiplicative factor on the forecast ensemble's anomalies before the analysis
        (before any Kalman step). A float of at least 1 is fixed (1: none).
        ``"finite-size"`` chooses it every cycle as the EnKF-N does (Bocquet 2011;
        Bocquet, Raanes and Hannart 2015): the ensemble's mean and covariance are treated
        as uncertain, and the factor ``sqrt((N - 1) / z*)`` follows from the minimiser
        ``z*`` of the EnKF-N's dual cost, a function of the innovation and the predicted
        observations' anomalies. It is about 1 where the observations fall within the
        ensemble's spread and grows where they do not, which is what a small ensemble
        in many dimensions needs: without it the filter lost a 40-dimensional case at
        N = 50 that it now tracks. It is at most 1.2 (``("finite-size", bound)`` sets
        another bound, ``inf`` none): a saturating observation operator such as arctan
        can make the unbounded estimate run away. The factor used is the ``inflation``
        diagnostic.
    kalman_fraction : float, "ess" or ("ess", float), default=("ess", 0.5)
        Fraction ``gamma`` in ``[0, 1)`` of the likelihood assimilated first by a
        square-root Kalman step (ETKF; LETKF with ``localization_radius``) with noise
        ``R / gamma``; the KDE analysis then assimilates ``p(y | x)^(1 - gamma)`` from its
        ensemble (the ensemble Kalman particle filter's split, Frei and Kuensch 2013).
        ``"ess"``: chosen every cycle as the smallest ``gamma`` (to 1e-3, at most 0.99)
        whose remaining weights ``p(y | x_i^gamma)^(1 - gamma)`` keep an ESS of at least
        ``ess_target * n_members`` (the adaptive EnKPF); ``("ess", floor)``: the same, at
        least ``floor``. The fraction used is the ``kalman_fraction`` diagnostic. The
        Kalman step is linear in the observation: for a bimodal posterior (``y = |x|``)
        set ``0.0``, or the part handed to it is lost.
    flow_start : {"auto", "noise", "members"}, default="auto"
        Start of the analysis' probability flow: fresh noise (a new random draw, the
        paper's sampler), or the forecast members encoded by the unweighted KDE's forward
        flow, so that each member is moved deterministically, not at all where the
        weights are uniform (:mod:`dasim.diffusion.kde_transport`). ``"members"`` needs
        ``sampler="ode"``, ``kernel="isotropic"`` and a fixed-step ``ode_solver``; global,
        it runs on numpy or torch (:func:`~dasim.diffusion.kde_transport.transport_ode`),
        with ``localization_radius`` on numpy. ``"auto"``: ``"members"`` where those hold,
        ``"noise"`` otherwise (e.g. with ``sampler="mixture"``).

    Attributes
    ----------
    device_ : str
        ``"numpy"`` or the torch device used.
    %(fitted_attrs)s
    %(mle_attrs)s
    state_coordinates_ : Coordinates
        The state locations (used with ``localization_radius``).
    observation_coordinates_ : Coordinates or None
        The observation locations, or None when they cannot be derived.

    See Also
    --------
    SIRFilter : The particle filter the KDE filter resembles in distribution.
    EnKF : Ensemble Kalman filter.

    References
    ----------
    B. Binder, A. Dasgupta, A. Oberai. Closed-form conditional diffusion models for data
    assimilation. arXiv:2603.21291 (2026).

    Examples
    --------
    >>> from dasim.datasets import make_twin_experiment
    >>> from dasim.filters import KDEDiffusionFilter
    >>> from dasim.models import Lorenz63
    >>> from dasim.observations import ObservationModel
    >>> model = Lorenz63(steps_per_cycle=10, process_noise=0.1)
    >>> obs = ObservationModel("arctan", noise_std=0.1)
    >>> X, y = make_twin_experiment(model, obs, 20, random_state=0, process_noise=False)
    >>> kde = KDEDiffusionFilter(model, obs, n_members=50, device="numpy", random_state=0)
    >>> ds = kde.fit(X).assimilate(y)
    >>> int(ds["nfev"].max())  # the defaults move the members: two flows of 20 steps
    40
    >>> bool((ds["kalman_fraction"] >= 0.5).all())  # at least half to the ETKF step
    True
    >>> paper = KDEDiffusionFilter(model, obs, n_members=50, device="numpy", random_state=0,
    ...                            **KDEDiffusionFilter.PAPER_PARAMS)
    >>> paper.set_params(bandwidth_y=0.2).fit(X).assimilate(y)["ess"].dims
    ('time',)
    """

    _diagnostics = (
        "ess",
        "n_steps",
        "nfev",
        "bandwidth_x",
        "bandwidth_y",
        "n_stages",
        "kalman_fraction",
        "inflation",
    )

    #: The paper's configuration as one parameter set (see the module's ``PAPER_PARAMS``).
    PAPER_PARAMS = PAPER_PARAMS
    #: For posteriors with several modes (see the module's ``MULTIMODAL_PARAMS``).
    MULTIMODAL_PARAMS = MULTIMODAL_PARAMS

    def __init__(
        self,
        model=None,
        observation=None,
        n_members=250,
        bandwidth_x="scott",
        bandwidth_y="noise",
        sigma_max=None,
        schedule="ve",
        sampler="ode",
        rtol=1e-5,
        atol=1e-5,
        likelihood="known",
        device="auto",
        random_state=None,
        n_steps=1000,
        beta_max=50.0,
        chunk_size=None,
        ess_warning=0.01,
        noise="moments",
        forecast_first=True,
        kernel="isotropic",
        shrink=None,
        ess_target=0.9,
        max_stages=1,
        ode_solver="ab3",
        ode_steps=None,
        localization_radius=None,
        periodic=True,
        state_coordinates=None,
        score_dtype="float64",
        inflation="finite-size",
        kalman_fraction=("ess", 0.5),
        flow_start="auto",
    ):
        store_params(self, locals())

    def _ess_count(self, n):
        """The ESS the weights of ``n`` members are kept at (see ``ess_target``)."""
        return ess_count(self.ess_target, n)

    @property
    def _shrink(self):
        """``shrink`` resolved: None is True wherever shrinkage is defined."""
        if self.shrink is None:
            return self.kernel != "isotropic"
        return bool(self.shrink)

    @property
    def _flow_start(self):
        """``flow_start`` resolved: ``"auto"`` is ``"members"`` wherever it is defined."""
        if self.flow_start != "auto":
            return self.flow_start
        transport = self.sampler == "ode" and self.kernel == "isotropic"
        return "members" if transport and self.ode_solver != "rk45" else "noise"

    def _check_params(self):
        _check_bandwidth(self.bandwidth_x, "bandwidth_x")
        _check_bandwidth(self.bandwidth_y, "bandwidth_y", _RULES + _NOISE_RULES)
        if self.kernel not in ("isotropic", "covariance", "joint"):
            raise ValueError(
                f"kernel must be one of ('isotropic', 'covariance', 'joint'), got {self.kernel!r}."
            )
        if self.shrink is not None and not isinstance(self.shrink, bool | np.bool_):
            raise TypeError(f"shrink must be a bool or None, got {self.shrink!r}.")
        if self.shrink and self.kernel == "isotropic" and self.localization_radius is None:
            raise ValueError(
                "shrink=True needs kernel='covariance' or 'joint', or localization_radius."
            )
        relative = self.kernel != "isotropic"
        if (
            relative
            and self._shrink
            and isinstance(self.bandwidth_x, numbers.Real)
            and not (self.bandwidth_x < 1)
        ):
            raise ValueError(
                "bandwidth_x is the relative bandwidth h with kernel='covariance' or 'joint' and "
                f"must be below 1 with shrink=True (centres shrunk by sqrt(1 - h^2)), got "
                f"{self.bandwidth_x!r}."
            )
        check_inflation(self.inflation)
        check_kalman_fraction(self.kalman_fraction)
        check_ess_target(self.ess_target)
        ms = self.max_stages
        if isinstance(ms, bool) or not isinstance(ms, numbers.Integral) or ms < 1:
            raise ValueError(f"max_stages must be a positive integer, got {ms!r}.")
        if ms > 1 and not (self.likelihood == "known" and self.bandwidth_y == "ess"):
            raise ValueError(
                "max_stages > 1 (progressive correction) needs likelihood='known' and "
                f"bandwidth_y='ess', got likelihood={self.likelihood!r} and "
                f"bandwidth_y={self.bandwidth_y!r}."
            )
        if self.sigma_max is not None:
            check_positive(self.sigma_max, "sigma_max")
        for name, options in [
            ("schedule", ("ve", "vp", "vp-early-stop")),
            ("sampler", ("ode", "sde", "mixture")),
            ("likelihood", ("simulated", "known")),
            ("ode_solver", ("rk45", "heun", "ab2", "ab3")),
            ("flow_start", ("auto", "noise", "members")),
        ]:
            if getattr(self, name) not in options:
                raise ValueError(f"{name} must be one of {options}, got {getattr(self, name)!r}.")
        if self.kernel == "joint" and (self.likelihood != "known" or self.max_stages > 1):
            raise ValueError(
                "kernel='joint' needs likelihood='known' (the kernel is conditioned on the "
                "observation under its noise R) and max_stages=1, got "
                f"likelihood={self.likelihood!r}, max_stages={self.max_stages!r}."
            )
        for name in ("rtol", "atol", "beta_max"):
            check_positive(getattr(self, name), name)
        optional = ("chunk_size", "ode_steps")
        for name in ("n_steps",) + tuple(o for o in optional if getattr(self, o) is not None):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}.")
        ew = self.ess_warning
        if isinstance(ew, bool) or not isinstance(ew, numbers.Real) or not 0 <= ew <= 1:
            raise ValueError(f"ess_warning must be in [0, 1], got {ew!r}.")
        from ..diffusion._kde_core import check_score_dtype

        check_score_dtype(self.score_dtype, "score_dtype", allow_none=False)
        self._check_localisation(allow_infinite=True)
        if self.localization_radius is not None:
            for name, value, need in [
                ("sampler", self.sampler, "ode"),
                ("kernel", self.kernel, "isotropic"),
            ]:
                if value != need:
                    raise ValueError(
                        f"localization_radius needs {name}={need!r} (the localised analysis "
                        f"is the probability flow of the localised score), got {value!r}."
                    )
        if self.flow_start == "members" and (
            self.sampler != "ode" or self.kernel != "isotropic" or self.ode_solver == "rk45"
        ):
            raise ValueError(
                "flow_start='members' needs sampler='ode', kernel='isotropic' and a fixed-step "
                f"ode_solver, got sampler={self.sampler!r}, kernel={self.kernel!r} and "
                f"ode_solver={self.ode_solver!r}."
            )
        self.device_ = self._resolve_device()

    def _resolve_device(self):
        dev = self.device
        if not isinstance(dev, str):
            raise TypeError(f"device must be a string, got {dev!r}.")
        # float64 throughout, so no MPS; checked here, in fit, not at the first cycle.
        return resolve_device(dev, fallback="numpy", types=("cpu", "cuda"))

    def _start_run(self, n_members, n_state):
        tapers = self._tapers(("xy", "xx"))
        self._taper_xy, self._taper_xx = tapers["xy"], tapers["xx"]
        needs_diagonal = self.likelihood == "known" or _noise_units(self.bandwidth_y)
        if self._taper_xy is not None and needs_diagonal and not self._obs_noise.is_diagonal:
            raise ValueError(
                "localization_radius needs a diagonal observation noise (noise_std a scalar "
                "or a vector) with likelihood='known' or bandwidth_y in noise units: the "
                "local weights taper each observation's own likelihood term."
            )

    def _analysis(self, forecast, y, predicted, loglik, log_weights, rng):
        bound = check_inflation(self.inflation)
        if bound is None:
            factor = float(self.inflation)
        else:
            factor = finite_size_factor(predicted, y, self._obs_noise, bound)
        if factor != 1.0:
            forecast = inflate(forecast, factor)
            predicted = self.observation_.apply(forecast)
        from ._kde_kalman import adaptive_fraction, kalman_step, tempered_noise

        kf = self.kalman_fraction
        if isinstance(kf, str | tuple | list):
            floor = 0.0 if isinstance(kf, str) else float(kf[1])
            target = self._ess_count(forecast.shape[0])
            gamma, forecast = adaptive_fraction(self, forecast, y, predicted, target, floor)
        else:
            gamma = float(kf)
            if gamma > 0.0:
                forecast = kalman_step(self, forecast, y, predicted, gamma)
        if gamma == 0.0:
            if factor != 1.0:
                loglik = self._obs_noise.log_likelihood(y, predicted)
            analysis, extra, diag = self._kde_analysis(forecast, y, predicted, loglik, rng)
        else:
            predicted = self.observation_.apply(forecast)
            with tempered_noise(self, 1.0 - gamma):
                loglik = self._obs_noise.log_likelihood(y, predicted)
                analysis, extra, diag = self._kde_analysis(forecast, y, predicted, loglik, rng)
        diag["kalman_fraction"] = gamma
        diag["inflation"] = factor
        return analysis, extra, diag

    def _kde_analysis(self, forecast, y, predicted, loglik, rng):
        """The KDE analysis proper (after inflation and any Kalman stage)."""
        covariance = self.kernel != "isotropic"
        if covariance:
            sigma_x = _relative_bandwidth(self.bandwidth_x, *forecast.shape)
            if self._shrink and not sigma_x < 1:
                raise ValueError(
                    f"bandwidth_x={self.bandwidth_x!r} gives a relative bandwidth h = "
                    f"{sigma_x:.3g}, which must be below 1 with shrink=True."
                )
        else:
            sigma_x = _resolve_bandwidth(self.bandwidth_x, forecast)
        if self.kernel == "joint":
            from ._kde_joint import joint_analysis

            return joint_analysis(self, forecast, y, predicted, sigma_x, rng)
        if self._taper_xy is not None:
            from ._kde_local import local_analysis

            return local_analysis(self, forecast, y, predicted, sigma_x, rng)
        if self.max_stages > 1:
            return progressive_analysis(self, forecast, y, loglik, sigma_x, rng)
        log_w, sigma_y = observation_weights(self, y, predicted, loglik, rng)
        analysis, info = self._draw(forecast, log_w, sigma_x, rng)
        ess = float(info["ess"])
        self._warn_collapse(ess, forecast.shape[0])
        diag = {
            "ess": ess,
            "n_steps": float(info.get("n_steps", np.nan)),
            "nfev": float(info.get("nfev", np.nan)),
            "bandwidth_x": sigma_x,
            "bandwidth_y": float(np.mean(sigma_y)),
            "n_stages": 1.0,
        }
        return analysis, None, diag

    def _state_sigma_max(self, ensemble, sigma_x):
        """``sigma_max`` in state units: the given one (checked) or the default rule."""
        from ..diffusion.kde_sampling import default_sigma_max

        if self.sigma_max is None:
            return default_sigma_max(ensemble, sigma_x)
        sigma_max = float(self.sigma_max)
        if sigma_max <= sigma_x:
            raise ValueError(
                f"sigma_max={sigma_max} must exceed the state bandwidth sigma_x={sigma_x}."
            )
        return sigma_max

    def _draw(self, forecast, log_w, sigma_x, rng, kernel=None):
        """One draw of the KDE conditional with log-weights ``log_w`` (any sampler).

        ``kernel`` overrides ``self.kernel`` (the joint kernel samples its whitened
        conditional mixture with the isotropic kernel).
        """
        from ..diffusion.kde_sampling import kde_analysis

        kernel = self.kernel if kernel is None else kernel
        if kernel == "covariance":
            sigma_max = self.sigma_max  # in whitened units; None: chosen by kde_analysis
        else:
            sigma_max = self._state_sigma_max(forecast, sigma_x)
        if self._flow_start == "members" and kernel == "isotropic":
            return transport_analysis(self, forecast, log_w, sigma_x, sigma_max)
        torch_backend = self.device_ != "numpy"
        return kde_analysis(
            forecast,
            log_w,
            sigma_x=sigma_x,
            sigma_max=sigma_max,
            schedule=self.schedule,
            beta_max=self.beta_max,
            sampler=self.sampler,
            rtol=self.rtol,
            atol=self.atol,
            n_steps=self.n_steps,
            rng=rng,
            backend="torch" if torch_backend else "numpy",
            device=self.device_ if torch_backend else None,
            chunk_size=self.chunk_size,
            kernel=kernel,
            shrink=self._shrink and kernel == "covariance",
            ode_solver=self.ode_solver,
            ode_steps=self.ode_steps,
            score_dtype=self.score_dtype,
        )

    def _warn_collapse(self, ess, n):
        if self.ess_warning > 0 and ess < max(2.0, self.ess_warning * n):
            warnings.warn(
                f"KDEDiffusionFilter: the observation weights collapsed (ESS {ess:.1f} of "
                f"{n}); consider a larger bandwidth_y.",
                WeightCollapseWarning,
                stacklevel=3,
            )
