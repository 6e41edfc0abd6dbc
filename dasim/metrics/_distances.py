"""Distances between point clouds (optimal transport)."""

import warnings

import numpy as np

from ._checks import _check_inputs


def _check_clouds(a, b, weights_a, weights_b):
    """Validate two point clouds (and their weights) for an optimal-transport distance."""
    _, a, wa, _ = _check_inputs(None, a, weights_a, need_truth=False, names=("", "a", "weights_a"))
    _, b, wb, _ = _check_inputs(None, b, weights_b, need_truth=False, names=("", "b", "weights_b"))
    if a.ndim not in (2, 3):
        raise ValueError(f"a must have shape (n, d) or (n_times, n, d), got shape {a.shape}")
    if b.ndim != a.ndim:
        raise ValueError(
            f"a and b must have the same number of dimensions, got a shape {a.shape} and "
            f"b shape {b.shape}"
        )
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"a and b must have the same dimension d, got a shape {a.shape} and b shape {b.shape}"
        )
    if a.ndim == 3 and a.shape[0] != b.shape[0]:
        raise ValueError(
            f"a and b must have the same number of times, got a shape {a.shape} and b "
            f"shape {b.shape}"
        )
    return a, b, wa, wb


def _optimal_transport_cost(a, b, weights_a, weights_b, metric):
    """Exact optimal transport cost between two clouds, one problem per time step.

    ``metric`` is scipy's ``cdist`` metric of the ground cost (``"euclidean"`` for W1,
    ``"sqeuclidean"`` for W2 squared). Returns a float for 2-D inputs, an array of shape
    ``(n_times,)`` for 3-D inputs.
    """
    import ot

    a, b, wa, wb = _check_clouds(a, b, weights_a, weights_b)
    single = a.ndim == 2
    if single:
        a, b = a[None], b[None]
    n_times, n, _ = a.shape
    m = b.shape[1]
    wa = np.broadcast_to(np.full(n, 1.0 / n) if wa is None else wa, (n_times, n))
    wb = np.broadcast_to(np.full(m, 1.0 / m) if wb is None else wb, (n_times, m))
    num_iter_max = max(1_000_000, 100 * n * m)
    out = np.empty(n_times)
    for t in range(n_times):
        # scipy's cdist forms each difference directly: no cancellation, so identical
        # points cost exactly zero (POT's default Gram expansion does not guarantee it).
        cost_matrix = np.ascontiguousarray(
            ot.dist(a[t], b[t], metric=metric, backend="scipy"), dtype=np.float64
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            cost, log = ot.emd2(
                np.ascontiguousarray(wa[t], dtype=np.float64),
                np.ascontiguousarray(wb[t], dtype=np.float64),
                cost_matrix,
                numItermax=num_iter_max,
                log=True,
            )
        if log.get("result_code") != 1:
            raise RuntimeError(
                f"ot.emd2 did not reach an optimal transport plan at time index {t} "
                f"(result_code {log.get('result_code')}: {log.get('warning')})"
            )
        out[t] = max(float(cost), 0.0)
    return float(out[0]) if single else out


#: The docstring of :func:`wasserstein1` and :func:`wasserstein2`, which differ only in
#: the ground cost.
_WASSERSTEIN_DOC = """Exact {p}-Wasserstein {alias}distance between two point clouds.

    Optimal transport with the {cost} cost (POT's ``ot.dist``, computed by direct
    differences, and the network simplex ``ot.emd2``), returning {returned}. Exact, not
    sliced or entropic. The clouds may differ in size.{intro}

    Parameters
    ----------
    a : array-like of shape (n, d) or (n_times, n, d), xarray.Dataset or DataArray
        First point cloud(s). The Dataset ``assimilate`` returns stands for its
        ``analysis`` ensembles with their ``weights`` if any.
    b : array-like of shape (m, d) or (n_times, m, d), xarray.Dataset or DataArray
        Second point cloud(s), with the same ``d`` (and ``n_times``) as ``a``.
    weights_a : array-like of shape (n,) or (n_times, n), optional
        Non-negative weights of the points of ``a``, each row summing to one.
        Uniform when omitted (and not allowed with a Dataset that has its own).
    weights_b : array-like of shape (m,) or (n_times, m), optional
        Same for ``b``.

    Returns
    -------
    w{p} : float or ndarray of shape (n_times,)
        A float for 2-D inputs, one value per time for 3-D inputs.

    Raises
    ------
    RuntimeError
        If the network simplex stops before reaching optimality.

    See Also
    --------
    {other} : The same with the {other_cost} cost.

    Notes
    -----
    The transport problems are solved one time step after another: the network simplex
    solves one problem per call.{notes}

    Examples
    --------
    >>> from dasim.metrics import wasserstein{p}
    >>> wasserstein{p}([[0.0, 0.0], [1.0, 0.0]], [[3.0, 4.0], [4.0, 4.0]])
    5.0{examples}
    """


def _wasserstein_doc(p, **fields):
    """Decorator: give ``wasserstein{p}`` :data:`_WASSERSTEIN_DOC`, filled in."""

    def decorate(func):
        func.__doc__ = _WASSERSTEIN_DOC.format(p=p, **fields)
        return func

    return decorate


@_wasserstein_doc(
    1,
    alias="(earth mover's) ",
    cost="Euclidean",
    returned="the optimal cost",
    intro=" To compare whole trajectories,\n    flatten each one into a point: "
    "``wasserstein1(a.reshape(len(a), -1), b.reshape(len(b),\n    -1))``.",
    other="wasserstein2",
    other_cost="squared-Euclidean",
    notes=" In one dimension with two clouds of the same size and\n    uniform weights, "
    "W1 is the mean absolute difference of the sorted points.",
    examples="\n    >>> wasserstein1([[0.0], [1.0]], [[0.0], [3.0]])\n    1.0",
)
def wasserstein1(a, b, weights_a=None, weights_b=None):
    return _optimal_transport_cost(a, b, weights_a, weights_b, "euclidean")


@_wasserstein_doc(
    2,
    alias="",
    cost="squared-Euclidean",
    returned="the square root of the optimal cost",
    intro="",
    other="wasserstein1",
    other_cost="Euclidean",
    notes="",
    examples="",
)
def wasserstein2(a, b, weights_a=None, weights_b=None):
    cost = _optimal_transport_cost(a, b, weights_a, weights_b, "sqeuclidean")
    return float(np.sqrt(cost)) if isinstance(cost, float) else np.sqrt(cost)
