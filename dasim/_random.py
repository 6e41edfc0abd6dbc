"""Seeds and random generators: the one place a ``random_state`` becomes a generator.

Every dasim function that draws random numbers takes ``random_state`` (an int, ``None``,
a ``numpy.random.Generator`` or a ``RandomState``) and turns it into a generator here:
:func:`as_generator` for numpy code, :func:`seed_from` and :func:`torch_generator` for
torch code. A low-level module: it imports nothing from dasim.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["as_generator", "seed_from", "torch_generator"]

#: Seeds drawn from a ``RandomState`` lie in ``[0, _SEED_HIGH)``.
_SEED_HIGH = 2**31 - 1


def as_generator(random_state):
    """Turn a seed, ``RandomState`` or ``Generator`` into a ``numpy.random.Generator``.

    A ``Generator`` is returned as is; an int seeds a new one (through a ``RandomState``,
    as scikit-learn's ``check_random_state`` reads it); a ``RandomState`` gives up one
    draw for the seed; a ``numpy.random.SeedSequence`` seeds a new one directly
    (``default_rng(seq)``); ``None`` gives a fresh, unseeded generator.
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.SeedSequence):
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, _SEED_HIGH))
    if random_state is None:
        return np.random.default_rng()
    rs = check_random_state(random_state)
    return np.random.default_rng(rs.randint(0, _SEED_HIGH))


def seed_from(random_state):
    """A 63-bit integer seed from an int, ``RandomState``, ``Generator`` or ``None``.

    An int is used as is (modulo ``2**63``); a ``Generator`` or ``RandomState`` gives up
    one draw; ``None`` draws from numpy's global ``RandomState``.
    """
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state) % (2**63)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1))
    return int(check_random_state(random_state).randint(0, _SEED_HIGH))


def torch_generator(random_state, device, torch):
    """A ``torch.Generator`` on ``device`` seeded by :func:`seed_from` (``random_state``).

    ``torch`` is the imported module (callers import it lazily).
    """
    gen = torch.Generator(device=device)
    gen.manual_seed(seed_from(random_state))
    return gen
