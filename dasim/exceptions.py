"""Warnings raised by dasim."""

__all__ = ["WeightCollapseWarning"]


class WeightCollapseWarning(UserWarning):
    """Importance weights collapsed onto one or two members at a cycle.

    Raised by :class:`dasim.filters.KDEDiffusionFilter` when the effective sample size of
    its observation weights falls below ``max(2, ess_warning * n_members)``. Filter it
    with ``warnings.simplefilter("ignore", WeightCollapseWarning)``.

    Examples
    --------
    >>> import warnings
    >>> from dasim.exceptions import WeightCollapseWarning
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warnings.warn("ESS below threshold", WeightCollapseWarning)
    >>> caught[0].category.__name__
    'WeightCollapseWarning'
    """
