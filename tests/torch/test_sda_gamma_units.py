"""SDAAssimilator's ``gamma_units``: SDA's own convention (``gamma`` in the squared units
of ``y``) against the default (``gamma`` on standardised observations).

The two are one likelihood, ``-1/2 sum_j (y_j - h_j)^2 / (std_j^2 + gamma c_j^2 r^2)``, with
``c = obs_scale_`` for ``"standardised"`` and ``c = 1`` for ``"observation"``: exact
identities, checked here on the guidance itself (log-likelihood and posterior epsilon at
fixed noisy states) to float32 round-off, and on whole samples.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dasim.assimilators import SDAAssimilator  # noqa: E402
from dasim.observations import ObservationModel  # noqa: E402

L = 9  # assimilation window
A, B = 100.0, 500.0  # physical state = A * standardised state + B
K, YB = 1000.0, 7.0  # physical observation = K * observation in unit scale + YB
SETTINGS = {
    "n_members": 8,
    "n_epochs": 2,
    "epoch_size": 256,
    "batch_size": 64,
    "width": 16,
    "depth": 1,
    "n_steps": 8,
    "progress": False,
    "device": "cpu",
    "random_state": 0,
    "n_threads": 1,
}
TIMES = (0.05, 0.3, 0.6, 0.9)  # diffusion times, from little noise to much
# float32 round-off: both sides compute in float32 (network, operator, residuals); the
# observed discrepancy is about 1e-7 of the largest value, 1e-5 at worst for the gradient.
RTOL = 1e-4


def ar1(n_traj=48, n_times=40, n_state=2, seed=0, a=0.9):
    """Stationary AR(1) trajectories with unit variance per component (standardised)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n_traj, n_times, n_state))
    x[:, 0] = rng.standard_normal((n_traj, n_state))
    for t in range(1, n_times):
        x[:, t] = a * x[:, t - 1] + np.sqrt(1 - a**2) * rng.standard_normal((n_traj, n_state))
    return x


def h_unit(x):
    """arctan(3 x) of the standardised first component, for physical states."""
    u = 3 * (x - B) / A
    return u.arctan() if isinstance(u, torch.Tensor) else np.arctan(u)


def h_physical(x):
    """The same observation in other units: K * h_unit + YB."""
    return K * h_unit(x) + YB


OBS_UNIT = ObservationModel(h_unit, noise_std=0.1, indices=[0])
OBS_PHYSICAL = ObservationModel(h_physical, noise_std=0.1 * K, indices=[0])


@pytest.fixture(scope="module")
def fitted():
    """One network, fitted twice on the same physical states: with each observation model."""
    X = A * ar1() + B
    unit = SDAAssimilator(OBS_UNIT, **SETTINGS).fit(X)
    phys = SDAAssimilator(OBS_PHYSICAL, **SETTINGS).fit(X)
    # the prior does not see the observations: the same network, bit for bit
    for p, q in zip(unit.score_net_.parameters(), phys.score_net_.parameters(), strict=True):
        assert torch.equal(p, q)
    np.testing.assert_allclose(phys.obs_scale_, K * unit.obs_scale_, rtol=1e-12)
    assert 0.5 < unit.obs_scale_[0] < 1.5  # arctan(3 z) of a standard normal z: about 1
    truth = X[3, :L]
    y_unit = OBS_UNIT.simulate(truth, random_state=1)
    y_unit[1::2] = np.nan
    return unit, phys, y_unit, K * y_unit + YB


def guidance_values(est, y, **params):
    """Log-likelihoods and posterior epsilons of ``est``'s guidance at fixed noisy states."""
    est.set_params(**params)
    guidance = est._guidance(y, est.score_net_, est._schedule(torch), torch)[0]
    x = torch.randn(8, L, 2, generator=torch.Generator().manual_seed(0))
    out = []
    for t in TIMES:
        t = torch.tensor(t)
        # the guidance term of epsilon alone: the prior's part is the same on both sides
        term = guidance(x, t) - est.score_net_(x, t).detach()
        out.append((guidance.log_likelihood(x, t).detach().numpy(), term.numpy()))
    return out


def assert_same(got, want):
    for (ll, eps), (ll_ref, eps_ref) in zip(got, want, strict=True):
        np.testing.assert_allclose(ll, ll_ref, rtol=0, atol=RTOL * np.abs(ll_ref).max())
        np.testing.assert_allclose(eps, eps_ref, rtol=0, atol=RTOL * np.abs(eps_ref).max())


def test_observation_units_are_standardised_units_with_gamma_over_obs_scale_squared(fitted):
    _, phys, _, y = fitted
    c2 = float(phys.obs_scale_[0] ** 2)  # about K**2: far from 1
    gamma = 30.0
    paper = guidance_values(phys, y, gamma_units="observation", gamma=gamma)
    assert_same(guidance_values(phys, y, gamma_units="standardised", gamma=gamma / c2), paper)
    # and not a coincidence: the same gamma in the other convention is another likelihood
    other = guidance_values(phys, y, gamma_units="standardised", gamma=gamma)
    ll, ll_ref = other[-1][0], paper[-1][0]
    assert np.abs(ll - ll_ref).max() > 0.1 * np.abs(ll_ref).max()


def test_observation_units_scale_gamma_with_the_square_of_the_units_of_y(fitted):
    # SDA's convention is tied to the units of y: K y + YB (with h and the noise to match)
    # needs K**2 gamma for the same posterior. The default convention needs nothing.
    unit, phys, y_unit, y_phys = fitted
    gamma = 1e-2
    for units, factor in (("observation", K**2), ("standardised", 1.0)):
        want = guidance_values(unit, y_unit, gamma_units=units, gamma=gamma)
        got = guidance_values(phys, y_phys, gamma_units=units, gamma=factor * gamma)
        assert_same(got, want)
    # the paper's gamma = 1e-2 on y in units of K is 1e-8 in the units of the unit-scale y:
    # not the unit-scale posterior (compared where the noise is large, t = 0.9)
    paper = guidance_values(phys, y_phys, gamma_units="observation", gamma=gamma)
    want = guidance_values(unit, y_unit, gamma_units="observation", gamma=gamma)
    assert np.abs(paper[-1][0] - want[-1][0]).max() > 0.1 * np.abs(want[-1][0]).max()


def test_observation_units_samples_and_attrs(fitted):
    _, phys, _, y = fitted
    c2 = float(phys.obs_scale_[0] ** 2)
    paper = phys.set_params(gamma_units="observation", gamma=30.0).assimilate(y, random_state=3)
    assert paper.attrs["gamma_units"] == "observation" and paper.attrs["gamma"] == 30.0
    same = phys.set_params(gamma_units="standardised", gamma=30.0 / c2).assimilate(
        y, random_state=3
    )
    # float32 round-off of the guidance, carried through the 8 sampler steps (each
    # amplifies by up to 1/mu): a few 1e-5 of the state's unit A
    np.testing.assert_allclose(
        same["analysis"].values, paper["analysis"].values, rtol=0, atol=1e-3 * A
    )


def test_gamma_units_is_checked():
    X = A * ar1(8, 20) + B
    fresh = SDAAssimilator(OBS_PHYSICAL, gamma_units="physical", **SETTINGS)
    with pytest.raises(ValueError, match="gamma_units must be one of 'standardised', 'obs"):
        fresh.fit(X)
    assert not hasattr(fresh, "score_net_")  # raised before any training
    est = SDAAssimilator(OBS_PHYSICAL, **dict(SETTINGS, n_epochs=1, epoch_size=32)).fit(X)
    assert est.get_params()["gamma_units"] == "standardised"
    y = K * np.full((L, 1), 0.5) + YB
    est.set_params(gamma_units=None)
    with pytest.raises(ValueError, match="gamma_units"):
        est.assimilate(y)
