"""The smoothers (EnKS, ParticleSmoother) against the exact Rauch-Tung-Striebel smoother.

Monte Carlo margins are stated with each test: a standard error (SE) from the ensemble
size, and a margin of 5 SE. The SEs were checked over independent seeds (12-20 per
case; see the comments): the observed root-mean-square error is at most the stated SE.
"""

import numpy as np
import pytest
from _kalman import kalman_filter, rts_smoother
from scipy.linalg import block_diag

from dasim.filters import EnKF, SIRFilter
from dasim.metrics import crps_ensemble
from dasim.models import FunctionModel, Persistence
from dasim.observations import ObservationModel
from dasim.smoothers import EnKS, ParticleSmoother

# A 2-D linear-Gaussian system observed through one linear combination (as in
# test_filters_kalman.py): x_k = M x_{k-1} + N(0, Q), y_k = H x_k + N(0, R).
M = np.array([[0.9, 0.2], [-0.1, 0.8]])
Q = np.array([[0.3, 0.05], [0.05, 0.2]])
R = np.array([[0.5]])
H = np.array([[1.0, 0.5]])
M0, P0 = np.array([0.5, -0.5]), np.array([[1.0, 0.3], [0.3, 0.7]])


def _linear_problem(n_times=6, seed=0, unobserved=(2,)):
    rng = np.random.default_rng(seed)
    model = FunctionModel(lambda e: e @ M.T, process_noise=Q)
    obs = ObservationModel(lambda x: x[..., :1] + 0.5 * x[..., 1:2], noise_std=R)
    x = rng.multivariate_normal(M0, P0)
    ys = []
    for _ in range(n_times):
        x = M @ x + rng.multivariate_normal(np.zeros(2), Q)
        ys.append(H @ x + rng.normal(scale=np.sqrt(R[0, 0]), size=1))
    ys = np.array(ys)
    ys[list(unobserved)] = np.nan
    return model, obs, ys


def _fitted(est, n_state=2):
    return est.fit(np.random.default_rng(99).normal(size=(50, n_state)))


def _moments(a):
    """Ensemble means (T, d) and covariances (T, d, d) of analysis (T, N, d)."""
    anom = a - a.mean(axis=1, keepdims=True)
    return a.mean(axis=1), np.einsum("tni,tnj->tij", anom, anom) / (a.shape[1] - 1)


# ---------------------------------------------------------------- the reference itself
def test_rts_smoother_is_the_gaussian_conditional():
    # The whole trajectory and the observations are jointly Gaussian: condition
    # x_{0:T-1} on the observed y's directly and compare with the RTS recursion.
    _, _, ys = _linear_problem(n_times=5, unobserved=(1,))
    n_times, d = len(ys), 2
    # x_t = M^{t+1} x_{-1} + sum_{j<=t} M^{t-j} w_j, with x_{-1} ~ N(M0, P0), w_j ~ N(0, Q).
    lin = np.zeros((n_times * d, (n_times + 1) * d))
    for t in range(n_times):
        lin[t * d : (t + 1) * d, :d] = np.linalg.matrix_power(M, t + 1)
        for j in range(t + 1):
            lin[t * d : (t + 1) * d, (j + 1) * d : (j + 2) * d] = np.linalg.matrix_power(M, t - j)
    mean = lin @ np.concatenate([M0, np.zeros(n_times * d)])
    cov = lin @ block_diag(P0, *[Q] * n_times) @ lin.T
    observed = [t for t in range(n_times) if not np.isnan(ys[t, 0])]
    h = np.zeros((len(observed), n_times * d))
    for i, t in enumerate(observed):
        h[i, t * d : (t + 1) * d] = H[0]
    s = h @ cov @ h.T + R[0, 0] * np.eye(len(observed))
    gain = np.linalg.solve(s, h @ cov).T
    post_mean = mean + gain @ (ys[observed, 0] - h @ mean)
    post_cov = cov - gain @ h @ cov
    ms, ps, cross = rts_smoother(M0, P0, M, Q, H, R, ys, cross=True)
    np.testing.assert_allclose(ms.ravel(), post_mean, atol=1e-12)
    for t in range(n_times):
        np.testing.assert_allclose(
            ps[t], post_cov[t * d : (t + 1) * d, t * d : (t + 1) * d], atol=1e-12
        )
    for t in range(n_times - 1):
        np.testing.assert_allclose(
            cross[t], post_cov[t * d : (t + 1) * d, (t + 1) * d : (t + 2) * d], atol=1e-12
        )
    # The last smoothed state is the last filtered one (kalman_filter takes no NaN row).
    full = np.nan_to_num(ys)
    mf, pf = kalman_filter(M0, P0, M, Q, H, R, full)
    ms, ps = rts_smoother(M0, P0, M, Q, H, R, full)
    np.testing.assert_allclose(ms[-1], mf[-1], atol=1e-12)
    np.testing.assert_allclose(ps[-1], pf[-1], atol=1e-12)


# ---------------------------------------------------------------- EnKS
def _enks_reference(init, ys, lag):
    """RTS smoothing moments from the initial ensemble's own moments; fixed lag: per t."""
    m0, p0 = init.mean(axis=0), np.cov(init.T)
    if lag is None:
        return rts_smoother(m0, p0, M, Q, H, R, ys)
    means, covs = np.empty((len(ys), 2)), np.empty((len(ys), 2, 2))
    for t in range(len(ys)):
        ms, ps = rts_smoother(m0, p0, M, Q, H, R, ys[: t + lag + 1])
        means[t], covs[t] = ms[t], ps[t]
    return means, covs


@pytest.mark.parametrize("lag", [None, 2])
@pytest.mark.parametrize("variant", ["sqrt", "stochastic"])
def test_enks_large_ensemble_matches_rts(variant, lag):
    model, obs, ys = _linear_problem()
    n = 20000
    init = np.random.default_rng(1).multivariate_normal(M0, P0, size=n)
    ks = _fitted(EnKS(model, obs, n_members=n, variant=variant, lag=lag, random_state=0))
    mean, cov = _moments(ks.assimilate(ys, initial_ensemble=init)["analysis"].values)
    ms, ps = _enks_reference(init, ys, lag)
    sd = np.sqrt(np.diagonal(ps, axis1=1, axis2=2))
    # SE of a mean: each cycle's noise draws add about one N-member sampling error; the
    # error measured over 12 seeds had RMS 0.6-1.5 sd / sqrt(N): SE = sd sqrt(3 / N).
    se = sd * np.sqrt(3 / n)
    assert np.all(np.abs(mean - ms) < 5 * se)
    # SE of a covariance entry: sqrt(2 / N) sd_i sd_j (measured RMS 0.4-0.95 of it).
    se_cov = np.sqrt(2 / n) * sd[:, :, None] * sd[:, None, :]
    assert np.all(np.abs(cov - ps) < 5 * se_cov)
    # The test has teeth: the filter's means are not the smoother's at the early times.
    mf, _ = kalman_filter(init.mean(0), np.cov(init.T), M, Q, H, R, ys[:2])
    assert np.abs(mf[0] - ms[0]).max() > 3 * 5 * se[0].max()  # 3 times the margin


@pytest.mark.parametrize(
    "variant, options",
    [
        ("sqrt", {}),
        ("stochastic", {}),
        ("sqrt", {"inflation": 1.1, "rotate": True}),
        ("stochastic", {"inflation": 1.1}),
        ("sqrt", {"inflation": "finite-size"}),
        ("stochastic", {"inflation": "finite-size"}),
        ("sqrt", {"forecast_first": False}),
    ],
)
def test_enks_lag_zero_is_the_enkf(variant, options):
    model, obs, ys = _linear_problem(n_times=8)
    kw = dict(n_members=12, variant=variant, random_state=3, **options)
    filt = _fitted(EnKF(model, obs, **kw)).assimilate(ys)
    smooth = _fitted(EnKS(model, obs, lag=0, **kw)).assimilate(ys)
    # The same code path and the same random numbers: equal draw for draw.
    np.testing.assert_array_equal(smooth["analysis"].values, filt["analysis"].values)
    np.testing.assert_array_equal(smooth["forecast"].values, filt["forecast"].values)
    np.testing.assert_array_equal(smooth["log_evidence"].values, filt["log_evidence"].values)


@pytest.mark.parametrize("variant", ["sqrt", "stochastic"])
def test_enks_window_and_long_lag_agree(variant):
    model, obs, ys = _linear_problem(n_times=7)
    kw = dict(n_members=10, variant=variant, random_state=4)
    whole = _fitted(EnKS(model, obs, **kw)).assimilate(ys)["analysis"].values
    long_lag = _fitted(EnKS(model, obs, lag=6, **kw)).assimilate(ys)["analysis"].values
    np.testing.assert_array_equal(whole, long_lag)
    filt = _fitted(EnKF(model, obs, **kw)).assimilate(ys)["analysis"].values
    # The last time is the filter's (rounding apart: the window changes the BLAS shapes);
    # the earlier ones are revised.
    np.testing.assert_allclose(whole[-1], filt[-1], rtol=1e-10, atol=1e-12)
    assert not np.allclose(whole[0], filt[0])
    lag2 = _fitted(EnKS(model, obs, lag=2, **kw)).assimilate(ys)["analysis"].values
    np.testing.assert_allclose(lag2[-3:], whole[-3:], rtol=1e-10, atol=1e-12)


def test_enks_on_the_nile_matches_rts():
    datasets = pytest.importorskip("dasim.datasets")
    if not hasattr(datasets, "load_nile"):
        pytest.skip("dasim.datasets.load_nile is not available")
    y = datasets.load_nile().to_numpy()[:, None]
    # Local level with the maximum-likelihood variances (Durbin and Koopman 2012).
    q, r = 1469.1, 15099.0
    n = 10000  # the whole-window EnKS costs O(T^2 N): ~2 s here
    init = np.random.default_rng(5).normal(1000.0, 300.0, size=(n, 1))
    model, obs = Persistence(np.sqrt(q)), ObservationModel(noise_std=np.sqrt(r))
    ks = EnKS(model, obs, n_members=n, random_state=0).fit(y[:10])
    a = ks.assimilate(y, initial_ensemble=init)["analysis"].values[..., 0]
    eye = np.eye(1)
    ms, ps, cross = rts_smoother(
        init.mean(0), np.cov(init.T).reshape(1, 1), eye, q * eye, eye, r * eye, y, cross=True
    )
    ms, var, cross = ms[:, 0], ps[:, 0, 0], cross[:, 0, 0]
    sd = np.sqrt(var)
    # SE of a smoothed mean over the 100-year window: measured over seeds and ensemble
    # sizes 2,500-40,000 the error is 2.6 sd / sqrt(N) RMS, shrinking as 1/sqrt(N) (no
    # bias): SE = 3 sd / sqrt(N). Variances: sqrt(2 / N) var (measured RMS 0.7 of it).
    margin = 5 * 3 * sd / np.sqrt(n)
    assert np.all(np.abs(a.mean(axis=1) - ms) < margin)
    assert np.all(np.abs(a.var(axis=1, ddof=1) - var) < 5 * np.sqrt(2 / n) * var)
    # The joint law: lag-one covariances, SE sqrt((var_t var_t+1 + cross^2) / N).
    anom = a - a.mean(axis=1, keepdims=True)
    emp = np.sum(anom[:-1] * anom[1:], axis=1) / (n - 1)
    se_cross = np.sqrt((var[:-1] * var[1:] + cross**2) / n)
    assert np.all(np.abs(emp - cross) < 5 * se_cross)
    # Teeth: the filter differs from the smoother by far more than the margin.
    mf, _ = kalman_filter(
        init.mean(0), np.cov(init.T).reshape(1, 1), eye, q * eye, eye, r * eye, y
    )
    assert np.max(np.abs(mf[:, 0] - ms) / margin) > 3


# ---------------------------------------------------------------- particle smoother
A1, Q1, R1, SD0 = 0.9, 0.5, 0.4, 1.5  # x_t = A x_{t-1} + N(0, Q^2), y_t = x_t + N(0, R^2)


def _ar1_problem(n_times=10, seed=0):
    rng = np.random.default_rng(seed)
    x, ys = SD0 * rng.normal(), []
    for _ in range(n_times):
        x = A1 * x + Q1 * rng.normal()
        ys.append(x + R1 * rng.normal())
    ys = np.array(ys)[:, None]
    ys[[3, 4]] = np.nan
    model = FunctionModel(lambda e: A1 * e, process_noise=Q1)
    return model, ObservationModel(noise_std=R1), ys


def _ar1_rts(init, ys):
    one = np.eye(1)
    ms, ps, cross = rts_smoother(
        [init.mean()],
        [[init.var(ddof=1)]],
        A1 * one,
        Q1**2 * one,
        one,
        R1**2 * one,
        ys,
        cross=True,
    )
    return ms[:, 0], ps[:, 0, 0], cross[:, 0, 0]


def _weighted_ess_of_distinct(a, w):
    """Per time, the ESS of the weights summed over identical states (shared ancestors)."""
    out = []
    for at, wt in zip(a, w, strict=True):
        _, inverse = np.unique(at, return_inverse=True)
        out.append(1.0 / np.sum(np.bincount(inverse.ravel(), weights=wt) ** 2))
    return np.array(out)


@pytest.mark.parametrize(
    "method, n, n_traj", [("ancestry", 20000, None), ("backward", 4000, 1000)]
)
def test_particle_smoother_matches_rts(method, n, n_traj):
    model, obs, ys = _ar1_problem()
    init = np.random.default_rng(7).normal(0.0, SD0, size=(n, 1))
    ps = ParticleSmoother(
        model, obs, n_members=n, method=method, n_trajectories=n_traj, random_state=1
    ).fit(np.random.default_rng(9).normal(size=(20, 1)))
    ds = ps.assimilate(ys, initial_ensemble=init)
    a, w = ds["analysis"].values[..., 0], ds["weights"].values
    assert a.shape == (len(ys), n if n_traj is None else n_traj)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    ms, var, cross = _ar1_rts(init, ys)
    if method == "ancestry":
        # Ancestral lines share states at early times: the SE of a weighted mean is
        # sd / sqrt(ESS of the weights summed per distinct state).
        n_eff = _weighted_ess_of_distinct(a, w)
    else:
        # M trajectories drawn through the filter's particles: 1/n_eff = 1/M + 1/ESS_t.
        ess = np.where(np.isnan(ds["ess"].values), n, ds["ess"].values)
        n_eff = 1.0 / (1.0 / n_traj + 1.0 / ess)
    # Measured over 20 seeds: RMS error / (sd / sqrt(n_eff)) 0.7-1.2, bias within noise.
    mean = np.sum(w * a, axis=1)
    assert np.all(np.abs(mean - ms) < 5 * np.sqrt(var / n_eff))
    v = np.sum(w * (a - mean[:, None]) ** 2, axis=1)
    assert np.all(np.abs(v - var) < 5 * np.sqrt(2 / n_eff) * var)
    # The joint law, through the lag-one covariances.
    emp = np.sum(w[1:] * (a[:-1] - mean[:-1, None]) * (a[1:] - mean[1:, None]), axis=1)
    n_pair = np.minimum(n_eff[:-1], n_eff[1:])
    assert np.all(np.abs(emp - cross) < 5 * np.sqrt((var[:-1] * var[1:] + cross**2) / n_pair))
    # Teeth: the particle filter's means (the smoother's last time aside) are not these.
    filt = SIRFilter(model, obs, n_members=n, random_state=1).fit(np.eye(2)[:, :1])
    fds = filt.assimilate(ys, initial_ensemble=init)
    fmean = np.sum(fds["weights"].values * fds["analysis"].values[..., 0], axis=1)
    assert np.max(np.abs(fmean[:-1] - ms[:-1]) / np.sqrt(var[:-1] / n_eff[:-1])) > 20


def test_ancestry_ends_at_the_filter_and_keeps_its_genealogy():
    model, obs, ys = _ar1_problem()
    kw = dict(n_members=300, ess_threshold=0.8, random_state=2)
    for forecast_first in (True, False):
        pf = SIRFilter(model, obs, forecast_first=forecast_first, **kw).fit(np.eye(2)[:, :1])
        ps = ParticleSmoother(model, obs, forecast_first=forecast_first, **kw)
        f = pf.assimilate(ys)
        s = ps.fit(np.eye(2)[:, :1]).assimilate(ys)
        # Same random numbers in the forward pass: the lines end at the filter's particles
        # with the filter's final weights, and every state of a line is a filter particle.
        np.testing.assert_array_equal(s["analysis"].values[-1], f["analysis"].values[-1])
        np.testing.assert_array_equal(s["weights"].values[-1], f["weights"].values[-1])
        for t in range(len(ys)):
            assert np.isin(s["analysis"].values[t], f["analysis"].values[t]).all()
        assert np.array_equal(s["log_evidence"].values, f["log_evidence"].values, equal_nan=True)
        # Path degeneracy shows in the diagnostic: fewer distinct ancestors going back.
        distinct = s["n_distinct"].values
        assert distinct[-1] == 300 and distinct[0] < distinct[-1]


def test_backward_with_a_single_particle_path_is_exact():
    # With the transition noise tiny the backward kernel must pick, at each time, the
    # particle whose noise-free forecast is the next state: trace a known chain.
    n = 50
    rng = np.random.default_rng(0)
    start = rng.normal(size=(n, 1)) * 10
    model = FunctionModel(lambda e: e + 100.0, process_noise=1e-6)
    obs = ObservationModel(noise_std=1e3)  # barely informative
    ps = ParticleSmoother(
        model,
        obs,
        n_members=n,
        method="backward",
        n_trajectories=20,
        ess_threshold=0.0,
        random_state=0,
    ).fit(np.eye(2)[:, :1])
    a = ps.assimilate(np.zeros((4, 1)), initial_ensemble=start)["analysis"].values[..., 0]
    # Without resampling particle i stays particle i; each trajectory is one of them.
    np.testing.assert_allclose(np.diff(a, axis=0), 100.0, atol=1e-4)


# ---------------------------------------------------------------- API and errors
@pytest.mark.parametrize(
    "est",
    [
        EnKS(n_members=6, random_state=0),
        EnKS(n_members=6, lag=1, variant="stochastic", random_state=0),
        ParticleSmoother(n_members=40, random_state=0),
        ParticleSmoother(n_members=40, n_trajectories=15, random_state=0),
        ParticleSmoother(n_members=40, method="backward", n_trajectories=15, random_state=0),
    ],
)
def test_output_dataset_and_score(est):
    rng = np.random.default_rng(0)
    X = np.cumsum(rng.normal(size=(12, 2)), axis=0)
    y = X + 0.5 * rng.normal(size=X.shape)
    y[4] = np.nan
    est.fit(X, y)
    ds = est.assimilate(y)
    n_out = getattr(est, "n_trajectories", None) or est.n_members
    assert ds["analysis"].dims == ("time", "member", "state")
    assert ds["analysis"].shape == (12, n_out, 2)
    assert np.isnan(ds["log_evidence"].values[4])
    if isinstance(est, ParticleSmoother):
        assert "forecast" not in ds
        assert ds["weights"].shape == (12, n_out)
        assert ds.attrs["method"] == est.method and ds.attrs["n_members"] == 40
        assert np.all((ds["n_distinct"] >= 1) & (ds["n_distinct"] <= 40))
    else:
        assert "weights" not in ds and ds["forecast"].shape == (12, 6, 2)
        assert ds.attrs["lag"] == str(est.lag) or ds.attrs["lag"] == est.lag
    # Same seed, same result; score is minus the mean CRPS of the smoothing ensemble.
    again = est.assimilate(y)
    np.testing.assert_array_equal(again["analysis"].values, ds["analysis"].values)
    weights = ds["weights"].values if "weights" in ds else None
    expected = -np.mean(crps_ensemble(X, ds["analysis"].values, weights))
    assert est.score(X, y) == pytest.approx(expected, rel=1e-12)
    # The run's arrays are not kept on the estimator.
    assert not hasattr(est, "_past") and not hasattr(est, "_parents")


def test_smoothers_take_every_filter_parameter():
    assert set(EnKF().get_params()) < set(EnKS().get_params())
    assert set(SIRFilter().get_params()) < set(ParticleSmoother().get_params())


def test_bad_parameters_are_refused_before_any_work():
    X = np.cumsum(np.random.default_rng(0).normal(size=(20, 3)), axis=0)
    with pytest.raises(ValueError, match="localization_radius"):
        EnKS(localization_radius=2.0).fit(X)
    for lag in (-1, 1.5, True):
        with pytest.raises(ValueError, match="lag"):
            EnKS(lag=lag).fit(X)
    with pytest.raises(ValueError, match="method"):
        ParticleSmoother(method="forward").fit(X)
    with pytest.raises(ValueError, match="n_trajectories"):
        ParticleSmoother(n_trajectories=0).fit(X)
    for model in (Persistence(0.0), Persistence([0.1, 0.0, 0.2]), lambda e: e):
        with pytest.raises(ValueError, match="process_noise"):
            ParticleSmoother(model, method="backward").fit(X)
    # model=None learns the noise from the increments: a constant component has none.
    X0 = X.copy()
    X0[:, 1] = 1.0
    obs = ObservationModel(noise_std=1.0)
    with pytest.raises(ValueError, match="process_noise"):
        ParticleSmoother(observation=obs, method="backward").fit(X0)
    ParticleSmoother(observation=obs).fit(X0)  # ancestry needs no transition density


def test_smoothers_compose_with_a_state_transformer():
    from dasim.compose import TransformedStateFilter

    rng = np.random.default_rng(1)
    X = 100.0 + 10.0 * np.cumsum(rng.normal(size=(15, 1)), axis=0)
    y = X + 5.0 * rng.normal(size=X.shape)
    model, obs = Persistence(10.0), ObservationModel(noise_std=5.0)
    for inner in (
        EnKS(model, obs, n_members=20, random_state=0),
        ParticleSmoother(model, obs, n_members=50, random_state=0),
    ):
        meta = TransformedStateFilter(inner).fit(X, y)
        ds = meta.assimilate(y)
        assert ds["analysis"].shape[0] == 15
        # Physical units: the smoothed means follow the observations around 100.
        assert np.abs(ds["analysis"].values.mean() - y.mean()) < 20.0
        assert np.isfinite(meta.score(X, y))
