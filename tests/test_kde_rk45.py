"""The one RK45 (dasim.diffusion._ode) against scipy's, and the array namespace."""

import numpy as np
import pytest
from scipy.integrate import RK45

from dasim.diffusion._ode import rk45
from dasim.diffusion._xp import NUMPY, namespace


def _rhs(M):
    def fun(t, y):
        return np.tanh(y @ M) * (1.0 + t) - 0.3 * y

    return fun


@pytest.mark.parametrize(
    ("rtol", "atol", "t0", "t1"),
    [(1e-5, 1e-5, 1.0, 0.01), (1e-3, 1e-6, 0.0, 3.0), (1e-8, 1e-8, 1.0, 0.0)],
)
def test_rk45_is_scipys_bit_for_bit(rtol, atol, t0, t1):
    rng = np.random.default_rng(0)
    fun = _rhs(rng.normal(size=(4, 4)))
    y0 = rng.normal(size=(3, 4))
    ref = RK45(
        lambda t, y: fun(t, y.reshape(3, 4)).ravel(), t0, y0.ravel(), t1, rtol=rtol, atol=atol
    )
    n_steps = 0
    while ref.status == "running":
        ref.step()
        n_steps += 1
    y, info = rk45(fun, t0, t1, y0, rtol, atol)
    assert np.array_equal(y.ravel(), ref.y)
    assert (info["n_steps"], info["nfev"]) == (n_steps, ref.nfev)


def test_rk45_torch_matches_numpy():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    M = rng.normal(size=(4, 4))
    y0 = rng.normal(size=(3, 4))
    y, info = rk45(_rhs(M), 1.0, 0.0, y0, 1e-6, 1e-6)
    Mt = torch.as_tensor(M)
    yt, info_t = rk45(
        lambda t, x: torch.tanh(x @ Mt) * (1.0 + t) - 0.3 * x,
        1.0,
        0.0,
        torch.as_tensor(y0),
        1e-6,
        1e-6,
    )
    assert isinstance(yt, torch.Tensor) and info_t["nfev"] == info["nfev"]
    np.testing.assert_allclose(yt.numpy(), y, rtol=1e-12, atol=1e-12)


def test_rk45_fails_on_a_non_finite_right_hand_side():
    with pytest.raises(RuntimeError, match="test ODE solver failed: non-finite"):
        rk45(
            lambda t, y: y * (np.nan if t < 0.5 else -1.0),
            1.0,
            0.0,
            np.ones((2, 2)),
            1e-5,
            1e-5,
            what="test ODE",
        )


def test_namespace_dispatch():
    assert namespace(np.zeros(2), None) is NUMPY
    with pytest.raises(ValueError, match="backend must be"):
        namespace(backend="jax")
    torch = pytest.importorskip("torch")
    xp = namespace(np.zeros(2), torch.zeros(2, dtype=torch.float32))
    assert xp.name == "torch" and xp.float_dtype == torch.float32
    with pytest.raises(ValueError, match="backend='numpy'"):
        namespace(torch.zeros(2), backend="numpy")
