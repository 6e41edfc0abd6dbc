"""Compose model-based filters with state transformers.

A scikit-learn ``Pipeline`` transforms ``X`` before the last step, but a filter's
dynamical model and observation operator work in physical units. ``TransformedStateFilter``
runs the filter in transformed coordinates (e.g. standardised states, where an isotropic
KDE bandwidth is meaningful) and maps states back to physical units before the model and
the observation operator see them, as :class:`sklearn.compose.TransformedTargetRegressor`
does for targets.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from .filters._base import SequentialFilter, _named_validation, _neg_crps, _score_inputs
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

    def forecast(self, ensemble, random_state=None):
        x = self.transformer.inverse_transform(np.atleast_2d(ensemble))
        return self.transformer.transform(self.model.forecast(x, random_state))

    def _check_params(self):
        self.model._check_params()

    def _forecast_checked(self, ensemble, rng, noise):
        # The model noise is the wrapped model's own, in physical units.
        x = self.transformer.inverse_transform(ensemble)
        inner = self.model._noise(x.shape[-1])
        return self.transformer.transform(self.model._forecast_checked(x, rng, inner))

    def _propagate(self, ensemble):
        x = self.transformer.inverse_transform(ensemble)
        return self.transformer.transform(self.model._propagate(x))


class _InverseThenObserve:
    """Callable observation operator ``z -> h(T^{-1}(z))`` (picklable)."""

    def __init__(self, observation, transformer):
        self.observation = observation
        self.transformer = transformer

    def __call__(self, z):
        shape = z.shape
        x = self.transformer.inverse_transform(np.reshape(z, (-1, shape[-1])))
        out = self.observation.apply(x)
        return out.reshape(*shape[:-1], out.shape[-1])


class TransformedStateFilter(BaseEstimator):
    """Run a sequential filter in transformed state coordinates.

    ``fit`` fits ``transformer`` on the training states and the filter on the transformed
    ones; the filter's model becomes ``z -> T(M(T^{-1} z))`` (model noise stays in physical
    units) and its observation operator ``z -> h(T^{-1} z)`` (observations are never
    transformed). ``assimilate``, ``sample`` and ``score`` speak physical units.

    Parameters
    ----------
    filter : SequentialFilter, default=None
        An unfitted :class:`~dasim.filters.EnKF`, :class:`~dasim.filters.SIRFilter` or
        :class:`~dasim.filters.KDEDiffusionFilter` (``None``: a default EnKF). Its
        ``model`` and ``observation`` are in physical units.
    transformer : transformer, default=None
        Any scikit-learn transformer with ``inverse_transform`` (``None``:
        :class:`~sklearn.preprocessing.StandardScaler`). It must be a bijection on states.

    Attributes
    ----------
    filter_ : SequentialFilter
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
        X : array-like of shape (n_times, n_state)
            Training states (physical units).
        y : array-like of shape (n_times, n_obs), optional
            Observations (never transformed).

        Returns
        -------
        self : object
            The fitted meta-estimator.
        """
        from .filters import EnKF

        filt = EnKF() if self.filter is None else self.filter
        if not isinstance(filt, SequentialFilter):
            raise TypeError(
                f"filter must be a dasim sequential filter (EnKF, SIRFilter, "
                f"KDEDiffusionFilter), got {filt!r}."
            )
        trans = StandardScaler() if self.transformer is None else self.transformer
        if not (hasattr(trans, "fit") and hasattr(trans, "inverse_transform")):
            raise TypeError(
                f"transformer must have fit, transform and inverse_transform, got {trans!r}."
            )
        X = _named_validation("X", validate_data, self, X, dtype=np.float64, ensure_min_samples=2)
        self.transformer_ = clone(trans).fit(X)
        Z = self.transformer_.transform(X)
        filt = clone(filt)
        params = {}
        if filt.model is not None:
            params["model"] = _TransformedModel(as_model(filt.model), self.transformer_)
        if filt.observation is not None:
            obs = filt.observation
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

    def _back(self, arr):
        shape = arr.shape
        return self.transformer_.inverse_transform(arr.reshape(-1, shape[-1])).reshape(shape)

    def assimilate(self, y, *, initial_ensemble=None, random_state=None, **kwargs):
        """Run the filter; ensembles come back in physical units.

        Parameters
        ----------
        y : array-like of shape (n_times, n_obs)
            Observations (NaN where unobserved).
        initial_ensemble : array-like of shape (n_members, n_state), optional
            Physical-unit starting ensemble.
        random_state : int, RandomState, numpy.random.Generator or None
            Seed (``None``: the filter's).
        **kwargs : dict
            Passed to the filter's ``assimilate`` (``keep_forecast``, ``progress``).

        Returns
        -------
        xarray.Dataset
            As the filter's, with ``analysis`` and ``forecast`` in physical units.
        """
        check_is_fitted(self)
        if initial_ensemble is not None:
            init = np.asarray(initial_ensemble, dtype=np.float64)
            if init.ndim != 2 or init.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"initial_ensemble must have shape (n_members, {self.n_features_in_}), "
                    f"got {init.shape}."
                )
            initial_ensemble = self.transformer_.transform(init)
        ds = self.filter_.assimilate(
            y, initial_ensemble=initial_ensemble, random_state=random_state, **kwargs
        )
        for name in ("analysis", "forecast"):
            if name in ds:
                ds[name] = (ds[name].dims, self._back(ds[name].values))
        ds.attrs["transformer"] = repr(self.transformer_)
        return ds

    def sample(self, n_samples=1, *, random_state=None):
        """Draw states from the filter's climatological prior, in physical units.

        Parameters
        ----------
        n_samples : int, default=1
            Number of states.
        random_state : int, RandomState, numpy.random.Generator or None
            Seed.

        Returns
        -------
        ndarray of shape (n_samples, n_state)
            Draws.
        """
        check_is_fitted(self)
        return self._back(self.filter_.sample(n_samples, random_state=random_state))

    def score(self, X, y):
        """Negative time-mean CRPS of the analyses against ``X``, in physical units.

        Parameters
        ----------
        X : array-like of shape (n_times, n_state)
            True states.
        y : array-like of shape (n_times, n_obs)
            Observations.

        Returns
        -------
        float
            Greater is better.
        """
        check_is_fitted(self)
        X, y = _score_inputs(self, X, y, self.filter_._check_obs)
        ds = self.assimilate(y, keep_forecast=False)
        w = ds["weights"].values if "weights" in ds else None
        return _neg_crps(X, ds["analysis"].values, w)
