"""The effective-sample-size target of :class:`~dasim.filters.KDEDiffusionFilter`.

``ess_target`` sets the ESS that the adaptive Kalman split and the tempered likelihood
(``bandwidth_y="ess"``) keep the weights at. A float ``c`` in ``(0, 1]`` is a fraction
of the ensemble: ``c N``. ``("drift", m)`` holds ``1/ESS - 1/N`` at ``1/m``: an ESS of
``N m / (N + m)``. Reweighting normalised i.i.d. weights moves the share ``p`` of any
fixed part of the ensemble by a variance of about ``p (1 - p) (1/ESS - 1/N)`` (the delta
method), so this form bounds that drift at ``p (1 - p) / m`` a cycle whatever N, where a
fraction bounds it at ``p (1 - p) (1/c - 1) / N``, loose at small N. ``("drift", m, c)``
keeps the tighter of the two bounds: the ESS is the larger of ``c N`` and
``N m / (N + m)``.
"""

from __future__ import annotations

import numpy as np

from .._validation import is_real

__all__ = []


def check_ess_target(value):
    """Raise a ValueError naming ``ess_target`` unless ``value`` is one of its forms."""
    drift = (
        isinstance(value, tuple | list)
        and len(value) in (2, 3)
        and isinstance(value[0], str)
        and value[0] == "drift"
        and is_real(value[1])
        and 0 < value[1] < np.inf
        and (len(value) == 2 or (is_real(value[2]) and 0 <= value[2] <= 1))
    )
    if not (drift or (is_real(value) and 0 < value <= 1)):
        raise ValueError(
            "ess_target must be in (0, 1], ('drift', m) or ('drift', m, fraction) with "
            f"m > 0 finite and fraction in [0, 1], got {value!r}."
        )


def ess_count(value, n):
    """The ESS that ``ess_target=value`` keeps the weights of ``n`` members at."""
    if isinstance(value, tuple | list):
        m = float(value[1])
        fraction = float(value[2]) if len(value) == 3 else 0.0
        return max(fraction * n, n * m / (n + m))
    return value * n
