"""The ensemble Kalman smoother (EnKS), whole window and fixed lag."""

from __future__ import annotations

import numbers

from .._inputs import store_params
from .._shared_doc import fill_shared_doc
from ..filters.enkf import EnKF

__all__ = ["EnKS"]


@fill_shared_doc
class EnKS(EnKF):
    """Ensemble Kalman smoother: the EnKF's transform applied to the past ensembles.

    The forward pass is the :class:`~dasim.filters.EnKF`'s, cycle by cycle. Every EnKF
    analysis moves each member by a linear map of the ensemble anomalies (an
    ensemble-space transform) that depends only on the forecast's predicted
    observations; the EnKS applies that same map to the members' states at earlier
    times, so each analysis also conditions the past on the new observation (Evensen and
    van Leeuwen 2000, in the form of DAPPER's ``EnKS``: the analysis of the state
    augmented with its past). With ``lag=None`` the whole window is updated and the
    ensemble at time ``t`` samples ``p(x_t | y_0, ..., y_{T-1})``; with ``lag=L`` only the
    last ``L`` cycles are, and it samples ``p(x_t | y_0, ..., y_{t+L})`` (the fixed-lag
    smoother); ``lag=0`` is the EnKF itself, draw for draw. Members keep their identity
    across times, so ``analysis[:, i]`` is one trajectory of the joint smoothing law.

    For a linear model with Gaussian noise and a linear observation operator the
    ensemble converges, as ``n_members`` grows, to the Rauch-Tung-Striebel smoother's
    means and covariances. Both EnKF variants apply (``"sqrt"``: the ETKF's symmetric
    square-root transform, and its random rotation with ``rotate=True``, on the whole
    augmented state; ``"stochastic"``: the perturbed-observation gain). Inflation, as in
    DAPPER, scales the anomalies of the current time only. Localisation has no single
    ensemble-space transform to carry to the past (each state component gets its own),
    so ``localization_radius`` must be None.

    The cost of an analysis grows with the window: ``O(N n_obs L d)`` for ``L`` past
    cycles of ``d`` components, so ``O(T^2)`` over a whole window of ``T`` cycles.

    Parameters
    ----------
    %(model_params)s
    n_members : int, default=100
        Ensemble size (at least 2).
    variant : {"sqrt", "stochastic"}, default="sqrt"
        Square-root (ETKF) or perturbed-observation analysis.
    inflation : float, "finite-size" or ("finite-size", float), default=1.0
        A float: multiplicative factor on the analysis anomalies of the current time (at
        least 1). ``"finite-size"``: the EnKF-N's factor on the forecast anomalies (see
        :class:`~dasim.filters.EnKF`), applied to the earlier times' ensembles of the
        window too, so that they receive the EnKF-N's transform.
    localization_radius : None, default=None
        Not supported by the smoother (a positive value raises a ``ValueError`` in
        ``fit``); kept so that the EnKF's parameters carry over.
    rotate : bool, default=False
        Apply a random mean-preserving orthogonal rotation to the square-root analysis
        anomalies of the whole window (see :class:`~dasim.filters.EnKF`).
    periodic : bool, default=True
        Unused without localisation (the EnKF's parameter).
    state_coordinates : Coordinates, array-like of shape (n_state, n_dims) or None, \
default=None
        Unused without localisation (the EnKF's parameter; checked in ``fit`` as there).
    random_state : int, RandomState or None, default=None
        Seed for the initial ensemble, model noise, perturbations and rotations.
    %(noise_params)s
    lag : int or None, default=None
        Number of earlier cycles each analysis updates: ``None`` for the whole window
        (the fixed-interval smoother), ``L >= 0`` for the fixed-lag smoother. Counted
        in cycles (rows of ``y``), unobserved ones included.

    Attributes
    ----------
    %(fitted_attrs)s

    See Also
    --------
    dasim.filters.EnKF : The filter whose analysis the smoother reuses.
    ParticleSmoother : Bootstrap particle smoother.

    References
    ----------
    .. [1] G. Evensen and P. J. van Leeuwen (2000), "An ensemble Kalman smoother for
       nonlinear dynamics", Monthly Weather Review 128(6), 1852-1867.
    .. [2] P. N. Raanes (2016), "On the ensemble Rauch-Tung-Striebel smoother and its
       equivalence to the ensemble Kalman smoother", Quarterly Journal of the Royal
       Meteorological Society 142(696), 1259-1264.

    Examples
    --------
    >>> from dasim.datasets import make_twin_experiment
    >>> from dasim.models import Persistence
    >>> from dasim.observations import ObservationModel
    >>> from dasim.smoothers import EnKS
    >>> model, obs = Persistence(process_noise=1.0), ObservationModel(noise_std=1.0)
    >>> X, y = make_twin_experiment(model, obs, 50, random_state=0, initial_state=[0.0])
    >>> ks = EnKS(model, obs, n_members=50, random_state=0).fit(X, y)
    >>> ds = ks.assimilate(y)
    >>> ds["analysis"].dims
    ('time', 'member', 'state')
    >>> fixed_lag = EnKS(model, obs, n_members=50, lag=5, random_state=0).fit(X, y)
    """

    _revises_past = True

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
        lag=None,
    ):
        store_params(self, locals())

    def _check_params(self):
        super()._check_params()
        if self.localization_radius is not None:
            raise ValueError(
                "EnKS does not support localization_radius (got "
                f"{self.localization_radius!r}): a localised analysis updates each state "
                "component with its own transform, which has no counterpart for the past "
                "ensembles. Use localization_radius=None."
            )
        lag = self.lag
        if lag is not None and (
            isinstance(lag, bool) or not isinstance(lag, numbers.Integral) or lag < 0
        ):
            raise ValueError(f"lag must be None or a non-negative integer, got {lag!r}.")

    def assimilate(
        self, y, *, initial_ensemble=None, random_state=None, keep_forecast=True, progress=False
    ):
        """Run the smoother over an observation sequence.

        The forward pass is the EnKF's (the initial ensemble stands one cycle before the
        first row of ``y`` unless ``forecast_first=False``); each analysis also updates
        the ensembles of the earlier cycles in the window.

        Parameters
        ----------
        %(assimilate_params)s
        keep_forecast : bool, default=True
            Whether to return the filter's forecast ensembles.
        progress : bool, default=False
            Show a tqdm progress bar over the cycles.

        Returns
        -------
        xarray.Dataset
            ``analysis``: the smoothing ensembles, dims ``(time, member, state)``
            (member ``i`` is one trajectory); ``forecast``: the EnKF's forecast
            ensembles; ``log_evidence``: the filter's per-cycle
            ``log p(y_k | y_{1:k-1})`` (NaN at an unobserved cycle); ``inflation``: the
            finite-size factor of each cycle (NaN with a fixed ``inflation``); the
            parameters and the seed in ``attrs``.
        """
        return super().assimilate(
            y,
            initial_ensemble=initial_ensemble,
            random_state=random_state,
            keep_forecast=keep_forecast,
            progress=progress,
        )

    def _run(self, y, ensemble, rng, **kwargs):
        try:
            return super()._run(y, ensemble, rng, **kwargs)
        finally:
            self.__dict__.pop("_past", None)  # the run's arrays are not kept

    def _analysis(self, forecast, y, predicted, loglik, log_weights, rng):
        past = self._past  # analyses of cycles 0 .. k-1, a view revised in place
        if self.lag is not None:
            past = past[max(0, past.shape[0] - int(self.lag)) :]
        n_past, n, d = past.shape
        if n_past == 0:
            analysis, _, factor = self._transform(forecast, y, predicted, rng)
            return analysis, None, {"inflation": factor}
        # Member i's past states side by side: (n_members, n_past * d), one augmented state.
        stacked = past.transpose(1, 0, 2).reshape(n, n_past * d)
        analysis, revised, factor = self._transform(forecast, y, predicted, rng, past=stacked)
        past[...] = revised.reshape(n, n_past, d).transpose(1, 0, 2)
        return analysis, None, {"inflation": factor}
