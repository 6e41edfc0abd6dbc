"""Compose dasim estimators with state transformers.

A scikit-learn ``Pipeline`` transforms ``X`` before the last step, but a filter's
dynamical model and observation operator work in physical units, and so do ``y`` and the
observation noise. ``TransformedStateFilter`` runs the filter (or a learned assimilator) in
transformed coordinates (e.g. standardised states, where an isotropic KDE bandwidth is
meaningful) and maps states back to physical units before the model and the observation
operator see them, as :class:`sklearn.compose.TransformedTargetRegressor` does for targets.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from ._inputs import check_burn_in, named_validation, neg_crps, score_inputs
from ._provenance import attr_value
from ._validation import check_array_finite
from .assimilators._base import WindowedAssimilator
from .exceptions import AssimilationError
from .filters._base import SequentialFilter
from .models import DynamicalModel, as_model
from .observations import ObservationModel

__all__ = ["TransformedStateFilter"]


class _TransformedModel(DynamicalModel):
    """``z -> T(M(T^{-1}(z)))``: a model acting on transformed states."""

    def __init__(self, model=None, transformer=None):
        self.model = model
        self.transformer = transformer

    @property
    def n_state(self):
        return self.model.n_state

    def forecast(self, ensemble, random_state=None, *, time=None, check_input=True):
        # The model noise is the wrapped model's own, in physical units.
        x = self.transformer.inverse_transform(np.atleast_2d(ensemble))
        out = self.model.forecast(x, random_state, time=time, check_input=check_input)
        return self.transformer.transform(out)

    def validate(self, n_state=None):
        self.model.validate(n_state)
        return self

    def noise_model(self, n_state):
        return None  # the wrapped model adds its noise, in physical units

    def _propagate(self, ensemble):
        return self._propagate_at(ensemble, None)

    def _propagate_at(self, ensemble, time):
        x = self.transformer.inverse_transform(ensemble)
        return self.transformer.transform(self.model.propagate(x, time=time))


class _InverseThenObserve:
    """Callable observation operator ``z -> h(T^{-1}(z))`` (picklable).

    With ``affine=(A, b)`` (``T^{-1}(z) = z @ A + b``), torch tensors are mapped in torch,
    so that :class:`~dasim.assimilators.SDAAssimilator` can differentiate through it.
    """

    def __init__(self, observation, transformer, affine=None):
        self.observation = observation
        self.transformer = transformer
        self.affine = affine

    def __call__(self, z):
        if type(z).__module__.startswith("torch"):
            if self.affine is None:
                raise TypeError(
                    "this observation operator maps states back through the transformer's "
                    "inverse_transform, which works on numpy arrays only."
                )
            A, b = (z.new_tensor(v) for v in self.affine)
            return self.observation.apply(z @ A + b)
        shape = z.shape
        x = self.transformer.inverse_transform(np.reshape(z, (-1, shape[-1])))
        out = self.observation.apply(x)
        return out.reshape(*shape[:-1], out.shape[-1])


def _affine_inverse(transformer, Z):
    """``(A, b)`` with ``inverse_transform(z) = z @ A + b`` on ``Z``, or None if not affine."""
    n = Z.shape[1]
    b = transformer.inverse_transform(np.zeros((1, n)))[0]
    A = transformer.inverse_transform(np.eye(n)) - b
    rows = Z[np.linspace(0, len(Z) - 1, min(len(Z), 256)).astype(int)]
    rows = np.concatenate([rows, 10 * rows])  # also away from the data
    exact = transformer.inverse_transform(rows)
    approx = rows @ A + b
    tol = 1e-9 * (np.abs(exact).max() + np.abs(b).max() + 1.0)
    if np.all(np.isfinite(approx)) and np.allclose(approx, exact, rtol=1e-9, atol=tol):
        return A, b
    return None


class TransformedStateFilter(BaseEstimator):
    """Run a filter or a learned assimilator in transformed state coordinates.

    ``fit`` fits ``transformer`` on the training states and the filter on the transformed
    ones; the filter's model becomes ``z -> T(M(T^{-1} z))`` (model noise stays in physical
    units) and its observation operator ``z -> h(T^{-1} z)`` (observations are never
    transformed). ``assimilate``, ``sample`` and ``score`` speak physical units.

    It is also the way to put a transformer in front of a learned assimilator
    (:class:`~dasim.assimilators.SDAAssimilator`,
    :class:`~dasim.assimilators.SOADAssimilator`) and keep ``y``, the observation model
    and the samples in physical units: ``fit`` then takes 3-D trajectories ``(n_traj,
    n_times, n_state)`` as well (the transformer acts on each state), which a
    :class:`~sklearn.pipeline.Pipeline` with a scikit-learn scaler cannot. A plain
    standardisation is not needed there: these estimators standardise internally.

    Parameters
    ----------
    filter : SequentialFilter or WindowedAssimilator, default=None
        An unfitted :class:`~dasim.filters.EnKF`, :class:`~dasim.filters.SIRFilter`,
        :class:`~dasim.filters.KDEDiffusionFilter`,
        :class:`~dasim.assimilators.SDAAssimilator` or
        :class:`~dasim.assimilators.SOADAssimilator` (``None``: a default EnKF). Its
        ``model`` and ``observation`` are in physical units.
    transformer : transformer, default=None
        Any scikit-learn transformer with ``inverse_transform`` (``None``:
        :class:`~sklearn.preprocessing.StandardScaler`). It must be a bijection on states;
        with :class:`~dasim.assimilators.SDAAssimilator`, which differentiates the
        observation operator in torch, an affine one (a scaler, PCA).

    Attributes
    ----------
    filter_ : SequentialFilter or WindowedAssimilator
        The fitted filter, working on transformed states.
    transformer_ : transformer
        The fitted transformer.
    n_features_in_ : int
        State dimension.

    Examples
    --------
    >>> from dasim.compose import TransformedStateFilter
    >>> from dasim.datasets import make_twin_experiment
    >>> from dasim.filters import KDEDiffusionFilter
    >>> from dasim.models import Lorenz63
    >>> from dasim.observations import ObservationModel
    >>> model = Lorenz63(steps_per_cycle=10, process_noise=0.1)
    >>> obs = ObservationModel(noise_std=1.0)
    >>> X, y = make_twin_experiment(model, obs, 30, random_state=0)
    >>> kde = KDEDiffusionFilter(model, obs, n_members=40, sampler="mixture",
    ...                          device="numpy", random_state=0)
    >>> est = TransformedStateFilter(kde).fit(X, y)
    >>> est.assimilate(y)["analysis"].shape
    (30, 40, 3)
    """

    def __init__(self, filter=None, transformer=None):
        self.filter = filter
        self.transformer = transformer

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y=None):
        """Fit the transformer on ``X`` and the filter on the transformed states.

        Parameters
        ----------
        X : array-like of shape (n_times, n_state) or (n_trajectories, n_times, n_state)
            Training states (physical units); 3-D trajectories for a learned assimilator.
        y : array-like of shape (n_times, n_obs), optional
            Observations (never transformed), row-aligned with ``X``.

        Returns
        -------
        self : object
            The fitted meta-estimator.
        """
        from .filters import EnKF

        filt = EnKF() if self.filter is None else self.filter
        if not isinstance(filt, SequentialFilter | WindowedAssimilator):
            raise TypeError(
                f"filter must be a dasim sequential filter (EnKF, SIRFilter, "
                f"KDEDiffusionFilter) or learned assimilator (SDAAssimilator, "
                f"SOADAssimilator), got {filt!r}."
            )
        trans = StandardScaler() if self.transformer is None else self.transformer
        if not (hasattr(trans, "fit") and hasattr(trans, "inverse_transform")):
            raise TypeError(
                f"transformer must have fit, transform and inverse_transform, got {trans!r}."
            )
        if isinstance(filt, WindowedAssimilator):
            return self._fit_learned(filt, trans, X, y)
        X = named_validation("X", validate_data, self, X, dtype=np.float64, ensure_min_samples=2)
        self.transformer_ = clone(trans).fit(X)
        Z = self.transformer_.transform(X)
        filt = clone(filt)
        params = {}
        if filt.model is not None:
            inner = as_model(filt.model)
            inner.validate(X.shape[1])  # process_noise is in physical units, checked here
            params["model"] = _TransformedModel(inner, self.transformer_)
        if filt.observation is not None:
            obs = filt.observation
            if isinstance(obs, ObservationModel):
                # Checked (and a callable probed) on the physical states, before wrapping.
                obs.validate(X.shape[1], X)
            params["observation"] = ObservationModel(
                _InverseThenObserve(obs, self.transformer_), noise_std=obs.noise_std
            )
        elif y is not None:
            # The default identity observes the first components in physical units.
            y2 = np.asarray(y, dtype=np.float64)
            n_obs = 1 if y2.ndim == 1 else y2.shape[1]
            ident = ObservationModel(indices=np.arange(n_obs))
            noise = np.sqrt(np.nanmean((y2.reshape(len(X), -1) - X[:, :n_obs]) ** 2, axis=0))
            ident.set_params(noise_std=noise)
            params["observation"] = ObservationModel(
                _InverseThenObserve(ident, self.transformer_), noise_std=noise
            )
        self.filter_ = filt.set_params(**params).fit(Z, y)
        return self

    def _fit_learned(self, est, trans, X, y):
        """``fit`` for a learned assimilator: 2-D or 3-D ``X``, wrapped observations."""
        X_arr = X if hasattr(X, "toarray") else np.asarray(X)
        if getattr(X_arr, "ndim", 2) == 3:
            X = check_array_finite(X, "X", ndim=3)
            self.n_features_in_ = X.shape[-1]
        else:
            X = named_validation("X", validate_data, self, X, dtype=np.float64)
        n_state = X.shape[-1]
        flat = X.reshape(-1, n_state)
        self.transformer_ = clone(trans).fit(flat)
        Z = self.transformer_.transform(flat).reshape(X.shape)
        affine = _affine_inverse(self.transformer_, Z.reshape(-1, n_state))
        if affine is None and getattr(est, "_differentiates_observation", False):
            raise ValueError(
                f"transformer={trans!r} is not affine: {type(est).__name__} differentiates "
                "its observation operator in torch, which works through an affine map "
                "(StandardScaler, MinMaxScaler, PCA, ...) only. Note that the learned "
                "assimilators standardise their states themselves."
            )
        est = clone(est)
        if est.observation is not None:
            given = est.observation
            many = isinstance(given, list | tuple)
            wrapped = [
                ObservationModel(
                    _InverseThenObserve(obs, self.transformer_, affine), noise_std=obs.noise_std
                )
                if isinstance(obs, ObservationModel)
                else obs  # the estimator's fit names what is wrong with it
                for obs in (given if many else [given])
            ]
            est.set_params(observation=wrapped if many else wrapped[0])
        else:
            # The default identity observes the first components in physical units.
            if y is None:
                n_obs = n_state
                noise = flat.std(axis=0)
            else:
                y2 = np.asarray(y, dtype=np.float64)
                n_obs = 1 if y2.ndim == X.ndim - 1 else y2.shape[-1]
                if y2.size != flat.shape[0] * n_obs or n_obs > n_state:
                    raise ValueError(
                        f"y must have the rows of X and at most {n_state} columns, got shape "
                        f"{y2.shape} for X of shape {X.shape}."
                    )
                with np.errstate(invalid="ignore"):
                    resid = y2.reshape(-1, n_obs) - flat[:, :n_obs]
                    noise = np.sqrt(np.nanmean(resid**2, axis=0))
            if not np.all(np.isfinite(noise)) or np.any(noise <= 0):
                raise ValueError(
                    "Cannot learn the observation noise from the training data (a component "
                    "has zero or undefined spread); pass an observation model."
                )
            ident = ObservationModel(indices=np.arange(n_obs), noise_std=noise)
            est.set_params(
                observation=ObservationModel(
                    _InverseThenObserve(ident, self.transformer_, affine), noise_std=noise
                )
            )
        self.filter_ = est.fit(Z, y)
        return self

    def _back(self, arr):
        shape = arr.shape
        if arr.size == 0:  # e.g. the partial result of a run that failed at cycle 0
            return arr
        return self.transformer_.inverse_transform(arr.reshape(-1, shape[-1])).reshape(shape)

    def assimilate(self, y, *, initial_ensemble=None, random_state=None, **kwargs):
        """Run the filter; ensembles come back in physical units.

        A run that fails at a cycle raises the filter's
        :class:`~dasim.exceptions.AssimilationError`, its ``partial`` Dataset in physical
        units too.

        Parameters
        ----------
        y : array-like of shape (n_times, n_obs)
            Observations (NaN where unobserved).
        initial_ensemble : array-like of shape (n_members, n_state), optional
            Physical-unit starting ensemble.
        random_state : int, RandomState, numpy.random.Generator or None
            Seed (``None``: the filter's).
        **kwargs : dict
            Passed to the filter's ``assimilate`` (``keep_forecast``, ``progress``; for a
            learned assimilator ``n_members``).

        Returns
        -------
        xarray.Dataset
            As the filter's, with ``analysis`` and ``forecast`` in physical units.
        """
        check_is_fitted(self)
        if isinstance(self.filter_, WindowedAssimilator):
            if initial_ensemble is not None:
                raise ValueError(
                    f"initial_ensemble applies to sequential filters, not to "
                    f"{type(self.filter_).__name__}, which samples the whole window."
                )
            if kwargs.get("background") is not None:
                raise ValueError(
                    "background is not mapped through the transformer; give it to "
                    "SOADAssimilator itself, which standardises its states internally."
                )
            ds = self.filter_.assimilate(y, random_state=random_state, **kwargs)
            return self._physical(ds)
        if initial_ensemble is not None:
            init = np.asarray(initial_ensemble, dtype=np.float64)
            if init.ndim != 2 or init.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"initial_ensemble must have shape (n_members, {self.n_features_in_}), "
                    f"got {init.shape}."
                )
            initial_ensemble = self.transformer_.transform(init)
        try:
            ds = self.filter_.assimilate(
                y, initial_ensemble=initial_ensemble, random_state=random_state, **kwargs
            )
        except AssimilationError as exc:
            if exc.partial is not None:  # the kept cycles, in physical units too
                exc.partial = self._physical(exc.partial)
            raise
        return self._physical(ds)

    def _physical(self, ds):
        """The filter's Dataset with its ensembles mapped back to physical units."""
        for name in ("analysis", "forecast"):
            if name in ds:
                ds[name] = (ds[name].dims, self._back(ds[name].values))
        ds.attrs["meta_estimator"] = type(self).__name__
        ds.attrs["transformer"] = attr_value(self.transformer_)
        return ds

    def sample(self, n_samples=1, *, random_state=None, **kwargs):
        """Draw from the wrapped estimator's prior, in physical units.

        Parameters
        ----------
        n_samples : int, default=1
            Number of states (filters) or trajectories (learned assimilators).
        random_state : int, RandomState, numpy.random.Generator or None
            Seed.
        **kwargs : dict
            Passed to the wrapped ``sample`` (``n_times`` for a learned assimilator).

        Returns
        -------
        ndarray of shape (n_samples, n_state) or (n_samples, n_times, n_state)
            Draws: climatological states for a filter, trajectories for a learned
            assimilator.
        """
        check_is_fitted(self)
        return self._back(self.filter_.sample(n_samples, random_state=random_state, **kwargs))

    def score(self, X, y, *, burn_in=0):
        """Negative time-mean CRPS of the analyses against ``X``, in physical units.

        Parameters
        ----------
        X : array-like of shape (n_times, n_state)
            True states.
        y : array-like of shape (n_times, n_obs)
            Observations.
        burn_in : int, default=0
            Number of leading cycles left out of the time mean (see
            :meth:`dasim.filters.EnKF.score`).

        Returns
        -------
        float
            Greater is better.
        """
        check_is_fitted(self)
        X, y = score_inputs(self, X, y, self.filter_._check_obs)
        burn_in = check_burn_in(burn_in, y.shape[0])
        learned = isinstance(self.filter_, WindowedAssimilator)
        ds = self.assimilate(y) if learned else self.assimilate(y, keep_forecast=False)
        w = ds["weights"].values if "weights" in ds else None
        return neg_crps(X, ds["analysis"].values, w, burn_in=burn_in)
