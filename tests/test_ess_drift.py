"""``ess_target=("drift", m)``: an ESS target that bounds how far one cycle's weights move
the share of any part of the ensemble, whatever N."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dasim.datasets import make_twin_experiment
from dasim.diffusion.kde_sampling import tempered_log_weights
from dasim.filters import KDEDiffusionFilter
from dasim.models import Lorenz63
from dasim.observations import ObservationModel


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 100_000),
    m=st.floats(1e-3, 1e6, allow_nan=False, allow_infinity=False),
)
def test_drift_target_holds_the_inverse_ess_excess_at_one_over_m(n, m):
    count = KDEDiffusionFilter(ess_target=("drift", m))._ess_count(n)
    assert 0 < count <= n
    assert 1.0 / count - 1.0 / n == pytest.approx(1.0 / m, rel=1e-9)
    assert KDEDiffusionFilter(ess_target=0.4)._ess_count(n) == pytest.approx(0.4 * n)
    both = KDEDiffusionFilter(ess_target=("drift", m, 0.5))._ess_count(n)
    assert both == pytest.approx(max(0.5 * n, count))
    # The tighter of the two drift bounds: 1/ESS - 1/n is the smaller of 1/m and 1/n.
    assert 1.0 / both - 1.0 / n == pytest.approx(min(1.0 / m, 1.0 / n), rel=1e-9)


@pytest.mark.parametrize("n", [25, 250])
@pytest.mark.parametrize("spec", [("drift", 100.0), 0.5])
def test_drift_of_a_share_is_p_one_minus_p_over_m(n, spec):
    # The delta method: weights w_i = u_i / sum(u) with i.i.d. u_i move the share of a
    # fixed half of the members by a variance p (1 - p) (1/ESS - 1/N). Tempered to the
    # drift target, that is p (1 - p) / m at every N; at a fixed fraction c it is
    # p (1 - p) (1/c - 1) / N, ten times larger at N = 25 than at 250. 4,000 draws give
    # the variance to about 2 % (one standard error); the margin is 15 %.
    rng = np.random.default_rng(7)
    filt = KDEDiffusionFilter(ess_target=spec)
    target = filt._ess_count(n)
    half = n // 2
    p = half / n
    shares = np.empty(4000)
    for r in range(shares.size):
        log_w, beta = tempered_log_weights(rng.normal(0.0, 3.0, n), target, max_exponent=1.0)
        assert beta < 1.0  # the tempering is active: the ESS sits at the target
        w = np.exp(log_w - log_w.max())
        shares[r] = w[:half].sum() / w.sum()
    expected = p * (1 - p) * (1.0 / target - 1.0 / n)
    assert np.var(shares) == pytest.approx(expected, rel=0.15)
    if isinstance(spec, tuple):
        assert expected == pytest.approx(p * (1 - p) / 100.0, rel=1e-9)


def test_drift_target_is_met_every_observed_cycle():
    model = Lorenz63(dt=0.01, steps_per_cycle=10, process_noise=0.1)
    obs = ObservationModel("arctan", noise_std=0.1)
    X, y = make_twin_experiment(model, obs, 20, random_state=3, process_noise=False)
    for n, m in [(30, 40.0), (120, 400.0)]:
        kde = KDEDiffusionFilter(
            model,
            obs,
            n_members=n,
            kernel="covariance",
            shrink=True,
            bandwidth_y="ess",
            ess_target=("drift", m),
            kalman_fraction=0.0,  # no Kalman split: the tempering alone holds the ESS
            sampler="mixture",
            device="numpy",
            random_state=0,
        ).fit(X)
        ds = kde.assimilate(y)
        ess, target = ds["ess"].values, n * m / (n + m)
        assert np.all(ess >= target * (1 - 1e-9))
        # Where the likelihood was tempered (bandwidth_y above 1), the ESS sits at the
        # target, not above it.
        tempered = ds["bandwidth_y"].values > 1 + 1e-9
        assert tempered.any()
        np.testing.assert_allclose(ess[tempered], target, rtol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        ("drift", 0.0),
        ("drift", -5.0),
        ("drift", np.inf),
        ("drift", np.nan),
        ("drift", True),
        ("drift",),
        ("fraction", 10.0),
        ("drift", "10"),
        "drift",
        ("drift", 10.0, 1.5),
        ("drift", 10.0, -0.1),
        ("drift", 10.0, 0.5, 1),
    ],
)
def test_bad_drift_target_is_refused_by_name(bad):
    model = Lorenz63(dt=0.01, steps_per_cycle=10)
    obs = ObservationModel("identity", noise_std=1.0)
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="ess_target"):
        KDEDiffusionFilter(model, obs, n_members=20, ess_target=bad).fit(X)
