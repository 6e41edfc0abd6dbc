"""Dynamical models: the forecast step of every filter.

A model propagates a whole ensemble, shape ``(n_members, n_state)``, over one assimilation
cycle at once (vectorised over members; the only Python loop is over integration steps)
and adds Gaussian model noise ``process_noise`` once per cycle.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from .._noise import GaussianNoise, cached_noise
from .._random import as_generator
from .._validation import check_array_finite, check_positive

_CLIMATOLOGY_CACHE = {}

__all__ = ["DynamicalModel", "ODEModel", "Persistence", "FunctionModel", "rk4_step"]


def rk4_step(tendency, x, dt):
    """One classical fourth-order Runge-Kutta step of ``dx/dt = tendency(x)``.

    Parameters
    ----------
    tendency : callable
        Vectorised right-hand side, ``(..., n_state) -> (..., n_state)``.
    x : ndarray of shape (..., n_state)
        Current states.
    dt : float
        Step size.

    Returns
    -------
    ndarray of shape (..., n_state)
        States after one step.

    Examples
    --------
    >>> import numpy as np
    >>> from dasim.models import rk4_step
    >>> float(rk4_step(lambda x: -x, np.array([1.0]), 0.1)[0])  # close to exp(-0.1)
    0.9048375
    """
    k1 = tendency(x)
    k2 = tendency(x + 0.5 * dt * k1)
    k3 = tendency(x + 0.5 * dt * k2)
    k4 = tendency(x + dt * k3)
    return x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


class DynamicalModel(BaseEstimator):
    """Base class of dynamical models.

    Subclasses implement :meth:`_propagate` (one noise-free cycle for a whole ensemble;
    a time-dependent model implements ``_propagate_at(ensemble, time)`` instead, which
    receives the time of the cycle as :meth:`forecast` describes) and, where a
    climatology exists, :meth:`_initial_guess`. Parameters are stored
    unchanged by ``__init__`` (scikit-learn convention), so models are nested parameters
    of the filters: ``GridSearchCV`` can tune ``model__process_noise``.

    Attributes
    ----------
    n_state : int or None
        State dimension, or ``None`` when any dimension is accepted.

    Examples
    --------
    >>> import numpy as np
    >>> from dasim.models import DynamicalModel
    >>> class Doubling(DynamicalModel):
    ...     def __init__(self, process_noise=0.0):
    ...         self.process_noise = process_noise
    ...
    ...     def _propagate(self, ensemble):
    ...         return 2.0 * ensemble
    >>> Doubling().forecast(np.ones((1, 2))).tolist()
    [[2.0, 2.0]]
    """

    n_state = None

    # -- to implement ----------------------------------------------------------------
    def _propagate(self, ensemble):
        raise NotImplementedError

    def _propagate_at(self, ensemble, time):
        """One noise-free cycle ending at ``time`` (the label of the row it produces).

        Time-independent models ignore ``time``; a time-dependent model overrides this.
        """
        return self._propagate(ensemble)

    def _initial_guess(self, n, rng):
        raise NotImplementedError(
            f"{type(self).__name__} has no climatology; pass an initial state or ensemble."
        )

    # -- the contract the estimators use ---------------------------------------------
    def _check_ensemble(self, ensemble, name="ensemble"):
        arr = check_array_finite(ensemble, name, ndim=(1, 2))
        n_state = self.n_state
        if n_state is not None and arr.shape[-1] != n_state:
            raise ValueError(
                f"{name} has {arr.shape[-1]} state components but {type(self).__name__} "
                f"has n_state={n_state}."
            )
        return arr

    def _check_params(self):
        """Validate the parameters; subclasses extend it (see :meth:`validate`)."""
        if self.n_state is not None:
            self.noise_model(self.n_state)
            return
        # Without a fixed dimension only the values can be checked here; the shape is
        # checked against the ensemble when the noise is resolved (noise_model).
        q = getattr(self, "process_noise", 0.0)
        if q is not None and np.ndim(q) <= 1:
            check_positive(q, "process_noise", allow_zero=True, allow_array=True)

    def validate(self, n_state=None):
        """Check every parameter, before any work.

        Parameters
        ----------
        n_state : int, optional
            The state dimension: ``process_noise`` is then checked against it too.

        Returns
        -------
        self : DynamicalModel
            The model (unchanged).

        Raises
        ------
        ValueError or TypeError
            Naming the parameter that is wrong.
        """
        self._check_params()
        if n_state is not None:
            self.noise_model(n_state)
        return self

    def noise_model(self, n_state):
        """The Gaussian model noise added once per cycle, resolved from ``process_noise``.

        Parameters
        ----------
        n_state : int
            The state dimension.

        Returns
        -------
        GaussianNoise or None
            ``None`` when the model has no noise (``process_noise`` zero or None). A
            vector ``process_noise`` may hold zeros (components without noise).
        """
        q = getattr(self, "process_noise", 0.0)
        return cached_noise(self, q, n_state, _resolve_process_noise)

    def add_noise(self, ensemble, random_state=None):
        """Add one cycle of Gaussian model noise ``N(0, Q)`` to an ensemble.

        Parameters
        ----------
        ensemble : ndarray of shape (n_members, n_state)
            States.
        random_state : int, numpy.random.Generator, RandomState or None
            Seed or generator.

        Returns
        -------
        ndarray of shape (n_members, n_state)
            The perturbed states (a new array).
        """
        ensemble = np.asarray(ensemble, dtype=np.float64)
        noise = self.noise_model(ensemble.shape[-1])
        if noise is None:
            return ensemble.copy()
        z = as_generator(random_state).standard_normal(ensemble.shape)
        return ensemble + noise.colour(z)

    def propagate(self, ensemble, *, time=None):
        """One noise-free cycle of an ensemble, unchecked.

        Parameters
        ----------
        ensemble : ndarray of shape (n_members, n_state)
            States.
        time : object, optional
            The time of the cycle (see :meth:`forecast`).

        Returns
        -------
        ndarray
            What the dynamics return, as float64, neither shape- nor finiteness-checked
            (:meth:`forecast` checks both): the mean of the transition density for
            additive noise.
        """
        with np.errstate(over="ignore", invalid="ignore"):
            out = self._propagate_at(np.asarray(ensemble, dtype=np.float64), time)
            return np.asarray(out, dtype=np.float64)

    def forecast(self, ensemble, random_state=None, *, time=None, check_input=True):
        """Propagate an ensemble over one assimilation cycle, with model noise.

        Parameters
        ----------
        ensemble : array-like of shape (n_members, n_state) or (n_state,)
            States at the start of the cycle.
        random_state : int, numpy.random.Generator, RandomState or None
            Seed or generator for the model noise.
        time : object, optional
            The time of the cycle: the label of the row the cycle produces (the row
            index in the filters and in :meth:`simulate`). Passed on to time-dependent
            models (:class:`FunctionModel` with ``time_arg=True``, which require it);
            other models ignore it.
        check_input : bool, default=True
            Validate the parameters and ``ensemble`` first. The filters pass ``False``
            in their cycle loop after :meth:`validate` (as scikit-learn's trees take
            ``check_input``): ``ensemble`` must then be a finite float64 array of shape
            ``(n_members, n_state)`` and the model's parameters unchanged since.

        Returns
        -------
        ndarray of the same shape
            States at the end of the cycle. A ``ValueError`` is raised if the model
            produced non-finite states or the wrong shape.
        """
        if check_input:
            self._check_params()
            x = self._check_ensemble(ensemble)
            x2 = np.atleast_2d(x)
            noise = self.noise_model(x2.shape[-1])
        else:
            x = x2 = ensemble
            noise = self.noise_model(x2.shape[-1])
        out = self.propagate(x2, time=time)
        if out.shape != x2.shape:
            raise ValueError(
                f"{type(self).__name__} returned shape {out.shape} for an ensemble of "
                f"shape {x2.shape}."
            )
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{type(self).__name__} returned non-finite states.")
        if noise is not None:
            out = out + noise.colour(as_generator(random_state).standard_normal(out.shape))
        return out.reshape(x.shape)

    def simulate(
        self, n_times, random_state=None, initial_state=None, process_noise=True, *, times=None
    ):
        """Simulate a true trajectory.

        The initial state stands one cycle before the first row (the convention of
        :meth:`dasim.filters.EnKF.assimilate`). The cycle that produces row ``k`` is
        given the time ``times[k]`` (``k`` by default), as the filters do.

        Parameters
        ----------
        n_times : int
            Number of cycles (rows).
        random_state : int, numpy.random.Generator, RandomState or None
            Seed or generator (initial state and model noise).
        initial_state : array-like of shape (n_state,), optional
            Start; a draw from :meth:`climatology` by default.
        process_noise : bool, default=True
            Whether the truth receives the model noise (twin experiments of the
            closed-form diffusion filter paper run the truth without it).
        times : array-like of shape (n_times,), optional
            Labels of the rows, passed to a time-dependent model (see :meth:`forecast`);
            ``0, 1, ..., n_times - 1`` by default, the labels a filter gives the rows of
            a plain array ``y``.

        Returns
        -------
        ndarray of shape (n_times, n_state)
            The trajectory.
        """
        if isinstance(n_times, bool) or not isinstance(n_times, int | np.integer):
            raise TypeError(f"n_times must be an integer, got {n_times!r}.")
        if n_times < 1:
            raise ValueError(f"n_times must be at least 1, got {n_times}.")
        if times is not None:
            times = np.asarray(times)
            if times.shape != (n_times,):
                raise ValueError(
                    f"times must have shape ({n_times},) (one label per row), got {times.shape}."
                )
        self._check_params()
        rng = as_generator(random_state)
        if initial_state is None:
            x = self.climatology(1, rng)[0]
        else:
            x = self._check_ensemble(initial_state, "initial_state")
            if x.ndim != 1:
                raise ValueError(f"initial_state must be 1-D, got shape {x.shape}.")
        out = np.empty((n_times, x.shape[-1]))
        for k in range(n_times):
            with np.errstate(over="ignore", invalid="ignore"):
                x = self._propagate_at(x[None, :], k if times is None else times[k])[0]
            if not np.all(np.isfinite(x)):
                raise ValueError(f"{type(self).__name__} returned non-finite states at cycle {k}.")
            if process_noise:
                x = self.add_noise(x[None, :], rng)[0]
            out[k] = x
        return out

    def climatology(self, n, random_state=None, *, pool_size=None):
        """Draw ``n`` states from the model's climatology.

        The climatology is a pool of states from long spun-up runs of the noise-free model
        (computed once per parameter set and pool size, and cached); draws pick pool
        states at random. The states drawn depend only on ``n``, ``pool_size`` and
        ``random_state``, never on what was drawn before in the process.

        Parameters
        ----------
        n : int
            Number of states.
        random_state : int, numpy.random.Generator, RandomState or None
            Seed or generator.
        pool_size : int or None, default=None
            States in the pool drawn from; ``None`` is ``max(n, 16384)``. At most 16384
            it is the same pool of 16384 states (256 chains); a larger pool is one state
            of each of ``pool_size`` chains, so it costs a spin-up of that many chains.
            Draws are without replacement when ``n`` does not exceed the pool.

        Returns
        -------
        ndarray of shape (n, n_state)
            Independent draws from the climatology.

        Examples
        --------
        >>> from dasim.models import Lorenz63
        >>> a = Lorenz63().climatology(3, random_state=0)
        >>> b = Lorenz63().climatology(3, random_state=0)
        >>> bool((a == b).all()), a.shape
        (True, (3, 3))
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}.")
        if pool_size is not None and (
            isinstance(pool_size, bool)
            or not isinstance(pool_size, int | np.integer)
            or pool_size < 1
        ):
            raise ValueError(f"pool_size must be a positive integer or None, got {pool_size!r}.")
        rng = as_generator(random_state)
        pool = self._climatology_pool(int(n) if pool_size is None else int(pool_size))
        idx = rng.choice(pool.shape[0], size=n, replace=n > pool.shape[0])
        return pool[idx].copy()

    def _climatology_pool(self, min_size):
        # The pool depends on the noise-free dynamics and its size only; it is shared by
        # all instances (clones included) with the same parameters. Its size is fixed by
        # the request alone, so a larger pool cached earlier never changes a draw.
        params = {k: v for k, v in self.get_params().items() if k != "process_noise"}
        size = max(min_size, 16384)
        key = (type(self).__qualname__, repr(sorted(params.items())), size)
        cached = _CLIMATOLOGY_CACHE.get(key)
        if cached is not None:
            return cached
        self._check_params()
        n_chains = 256 if size <= 16384 else size
        n_record = -(-size // n_chains)
        rng = np.random.default_rng(20240531)
        x = self._initial_guess(n_chains, rng)
        cycle_time = self._cycle_time()
        n_burn = int(np.ceil(self.climatology_spinup / cycle_time))
        # Recorded states of a chain are half a model time unit apart.
        thin = max(1, int(round(0.5 / cycle_time)))
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(n_burn):
                x = self._propagate(x)
            rec = []
            for _ in range(n_record):
                for _ in range(thin):
                    x = self._propagate(x)
                rec.append(x.copy())
        pool = np.concatenate(rec, axis=0)
        if not np.all(np.isfinite(pool)):
            raise ValueError(f"{type(self).__name__} diverged while computing its climatology.")
        _CLIMATOLOGY_CACHE[key] = pool
        return pool

    climatology_spinup = 20.0

    def _cycle_time(self):
        return 1.0


class ODEModel(DynamicalModel):
    """An ordinary differential equation integrated by RK4 (base of the Lorenz models).

    Subclasses implement :meth:`tendency`. Parameters ``dt`` and ``steps_per_cycle`` set
    the integration; ``process_noise`` the additive model noise per cycle.

    Examples
    --------
    >>> import numpy as np
    >>> from dasim.models import ODEModel
    >>> class Decay(ODEModel):
    ...     def __init__(self, dt=0.1, steps_per_cycle=10, process_noise=0.0):
    ...         self.dt = dt
    ...         self.steps_per_cycle = steps_per_cycle
    ...         self.process_noise = process_noise
    ...
    ...     def tendency(self, x):
    ...         return -x
    >>> Decay().forecast(np.ones((1, 1))).round(4).tolist()  # close to exp(-1)
    [[0.3679]]
    """

    def tendency(self, x):
        """Compute the right-hand side ``dx/dt``.

        Parameters
        ----------
        x : ndarray of shape (..., n_state)
            States.

        Returns
        -------
        ndarray of shape (..., n_state)
            The tendency ``dx/dt`` at each state.
        """
        raise NotImplementedError

    def _cycle_time(self):
        return self.dt * self.steps_per_cycle

    def _check_integration(self):
        check_positive(self.dt, "dt")
        s = self.steps_per_cycle
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1:
            raise ValueError(f"steps_per_cycle must be a positive integer, got {s!r}.")

    def _check_params(self):
        super()._check_params()
        self._check_integration()

    def _propagate(self, ensemble):
        x = ensemble
        for _ in range(int(self.steps_per_cycle)):
            x = rk4_step(self.tendency, x, self.dt)
        return x


class Persistence(DynamicalModel):
    """Persistence (random-walk) model: ``x_{k+1} = x_k + N(0, Q)``.

    The default model of the filters when none is given; its noise is learned from the
    increments of the training states.

    Parameters
    ----------
    process_noise : float, array of shape (n_state,) or (n_state, n_state), default=0.0
        Standard deviation(s) or covariance of the random-walk increments.

    Examples
    --------
    >>> import numpy as np
    >>> from dasim.models import Persistence
    >>> Persistence(process_noise=0.0).forecast(np.ones((2, 3))).tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """

    def __init__(self, process_noise=0.0):
        self.process_noise = process_noise

    def _propagate(self, ensemble):
        return ensemble.copy()


class FunctionModel(DynamicalModel):
    """Wrap a black-box callable ``f(ensemble) -> ensemble`` as a dynamical model.

    Parameters
    ----------
    func : callable
        Maps an ensemble of shape ``(n_members, n_state)`` to the ensemble one cycle later
        (same shape). It is called once per cycle with the whole ensemble, as
        ``func(ensemble)``, or ``func(ensemble, t)`` when ``time_arg=True``.
    process_noise : float, array of shape (n_state,) or (n_state, n_state), default=0.0
        Additive Gaussian model noise per cycle.
    time_arg : bool, default=False
        Whether ``func`` takes the time of the cycle as second argument (a
        time-dependent model, such as a forcing that varies with time or a linear model
        ``x_k = M_k x_{k-1}``). ``t`` is the label of the row the cycle produces: in
        ``assimilate`` and ``score``, the row's entry of the output's ``time``
        coordinate, i.e. the row index ``k = 0, 1, ...`` of a plain array ``y``, or the
        index of a pandas ``y`` (the first coordinate of an xarray one); in
        :meth:`~DynamicalModel.simulate` and :func:`dasim.datasets.make_twin_experiment`,
        the row index (or the ``times`` given). The initial ensemble stands one cycle
        before the first row, so the first cycle gets ``t = 0``. To work in physical
        time, compute it inside ``func`` (for example ``t0 + t * dt``) or label the rows
        of ``y`` with it.

    Examples
    --------
    >>> import numpy as np
    >>> from dasim.models import FunctionModel
    >>> FunctionModel(lambda x: 0.5 * x).forecast(np.ones((1, 2))).tolist()
    [[0.5, 0.5]]
    >>> growth = FunctionModel(lambda x, t: (1.0 + 0.1 * t) * x, time_arg=True)
    >>> growth.simulate(3, initial_state=np.ones(1)).ravel().tolist()  # t = 0, 1, 2
    [1.0, 1.1, 1.32]
    """

    def __init__(self, func=None, process_noise=0.0, time_arg=False):
        self.func = func
        self.process_noise = process_noise
        self.time_arg = time_arg

    def _check_params(self):
        super()._check_params()
        if not isinstance(self.time_arg, bool | np.bool_):
            raise TypeError(f"time_arg must be a bool, got {self.time_arg!r}.")

    def _propagate(self, ensemble):
        # A time-dependent func has no step without a time: _propagate_at raises.
        return self._propagate_at(ensemble, None)

    def _propagate_at(self, ensemble, time):
        if not callable(self.func):
            raise TypeError(f"func must be callable, got {self.func!r}.")
        if self.time_arg:
            if time is None:
                raise ValueError(
                    "FunctionModel(time_arg=True) needs the time of the cycle: pass "
                    "forecast(..., time=t) (the filters and simulate pass it)."
                )
            out = self.func(ensemble, time)
        else:
            out = self.func(ensemble)
        out = np.asarray(out, dtype=np.float64)
        if out.shape != ensemble.shape:
            raise ValueError(
                f"func returned shape {out.shape} for an ensemble of shape {ensemble.shape}."
            )
        return out


def as_model(model):
    """Return ``model`` as a :class:`DynamicalModel` (callables are wrapped).

    Parameters
    ----------
    model : DynamicalModel or callable
        A dasim model (returned unchanged) or a callable ``f(ensemble) -> ensemble``
        (wrapped in a :class:`FunctionModel`).

    Returns
    -------
    DynamicalModel
        The model.

    Examples
    --------
    >>> from dasim.models import Persistence, as_model
    >>> type(as_model(lambda x: 2 * x)).__name__
    'FunctionModel'
    >>> as_model(Persistence())
    Persistence()
    """
    if isinstance(model, DynamicalModel):
        return model
    if callable(model):
        return FunctionModel(model)
    raise TypeError(
        f"model must be a dasim DynamicalModel, a callable f(ensemble) -> ensemble or None, "
        f"got {model!r}."
    )


def _resolve_process_noise(q, n_state):
    """``process_noise`` as a :class:`GaussianNoise`, or None for no noise."""
    if q is None:
        return None
    arr = np.asarray(q, dtype=np.float64)
    if arr.ndim == 0:
        check_positive(float(arr), "process_noise", allow_zero=True)
        return None if arr == 0 else GaussianNoise(std=float(arr), dim=n_state)
    if arr.ndim == 1 and np.all(arr == 0):
        return None
    if arr.ndim == 1:
        check_positive(arr, "process_noise", allow_zero=True, allow_array=True)
        if arr.shape != (n_state,):
            raise ValueError(
                f"process_noise has {arr.shape[0]} entries but the state has {n_state}."
            )
        return GaussianNoise(std=arr, name="process_noise", allow_zero=True)
    return GaussianNoise.from_spec(arr, n_state, "process_noise")
