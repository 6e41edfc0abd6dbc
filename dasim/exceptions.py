"""Warnings and exceptions raised by dasim."""

__all__ = ["AssimilationError", "UnitsWarning", "WeightCollapseWarning"]


class AssimilationError(ValueError):
    """An assimilation run failed at a cycle; the cycles before it are kept.

    Raised by the sequential filters' ``assimilate`` when the dynamical model or the
    observation operator fails (raises, or returns non-finite values) in the middle of a
    run, or when the filter itself breaks down (every member has zero likelihood, the
    analysis is not finite). The message names the cycle; ``partial`` holds the
    :class:`xarray.Dataset` that ``assimilate`` would have returned for the cycles
    ``0 .. cycle - 1`` (same variables, coordinates and ``attrs``), so a long run is not
    lost. It is a :class:`ValueError`, so ``except ValueError`` still catches it.

    Parameters
    ----------
    message : str
        What went wrong, naming the cycle.
    cycle : int or None, default=None
        The (0-based) cycle that failed; the partial result has exactly ``cycle`` time
        steps.
    partial : xarray.Dataset or None, default=None
        The result up to the last good cycle (``None`` when the run was not started from
        ``assimilate``, e.g. inside ``score``).

    Attributes
    ----------
    cycle : int or None
        The cycle that failed.
    partial : xarray.Dataset or None
        The result of cycles ``0 .. cycle - 1``.

    Examples
    --------
    >>> from dasim.exceptions import AssimilationError
    >>> err = AssimilationError("the model returned non-finite states at cycle 7", cycle=7)
    >>> isinstance(err, ValueError), err.cycle, err.partial is None
    (True, 7, True)
    """

    def __init__(self, message, cycle=None, partial=None):
        super().__init__(message)
        self.cycle = cycle
        self.partial = partial

    def __reduce__(self):
        return (type(self), (self.args[0] if self.args else "", self.cycle, self.partial))


class UnitsWarning(UserWarning):
    """The observations look as if they were in other units than the training data.

    Raised by :class:`dasim.assimilators.SDAAssimilator` and
    :class:`dasim.assimilators.SOADAssimilator` when most observed values of a column of
    ``y`` lie far outside the range that the observation operator takes on the training
    states (more than a few of its standard deviations, the noise included): typically
    ``y`` in physical units given to an assimilator fitted on scaled states (e.g. after a
    ``StandardScaler`` in a pipeline), or the reverse. Filter it with
    ``warnings.simplefilter("ignore", UnitsWarning)``.

    Examples
    --------
    >>> import warnings
    >>> from dasim.exceptions import UnitsWarning
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warnings.warn("y looks like it is in other units", UnitsWarning)
    >>> caught[0].category.__name__
    'UnitsWarning'
    """


class WeightCollapseWarning(UserWarning):
    """Importance weights collapsed onto one or two members at a cycle.

    Raised by :class:`dasim.filters.KDEDiffusionFilter` when the effective sample size of
    its observation weights falls below ``max(2, ess_warning * n_members)``. Filter it
    with ``warnings.simplefilter("ignore", WeightCollapseWarning)``.

    Examples
    --------
    >>> import warnings
    >>> from dasim.exceptions import WeightCollapseWarning
    >>> issubclass(WeightCollapseWarning, UserWarning)
    True
    >>> with warnings.catch_warnings():  # silence it for one run
    ...     warnings.simplefilter("ignore", WeightCollapseWarning)
    ...     warnings.warn("ESS below threshold", WeightCollapseWarning)
    """
