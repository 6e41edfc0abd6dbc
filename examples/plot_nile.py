"""
Noise levels from observations alone: the Nile
==============================================

A real series and no model: the annual flow of the Nile at Aswan, 1871-1970, the
running example of Durbin and Koopman's *Time Series Analysis by State Space Methods*.
Their local-level model says the flow is a level that wanders as a random walk, seen
through observation noise: ``y_t = mu_t + eps_t``, ``mu_{t+1} = mu_t + eta_t``. That is
exactly a filter with ``model=None`` (the persistence model) and ``observation=None``
(the identity). Only the two noise variances are unknown, and with ``noise="mle"`` the
filter learns them from the observations by maximising its log-evidence. We compare
them with the exact Kalman filter's maximum-likelihood values, and draw the filtered
and the smoothed level.
"""

# %%
# The data
# --------
# :func:`~dasim.datasets.load_nile` returns the 100 values, shipped with dasim, as an
# :class:`xarray.DataArray` whose ``time`` coordinate holds the years.
import matplotlib.pyplot as plt
import numpy as np
from scipy.optimize import minimize

from dasim.datasets import load_nile
from dasim.filters import EnKF
from dasim.smoothers import EnKS

nile = load_nile()
years = nile["time"].values
y = nile.to_numpy()
print(f"{nile.attrs['long_name']}, {years[0]}-{years[-1]}: mean {y.mean():.2f}")

# %%
# The exact answer: a Kalman filter
# ---------------------------------
# For this linear-Gaussian model the Kalman filter gives the exact log-likelihood. With
# a diffuse prior on the first level, the first observation fixes it (``mu_1 | y_1 ~
# N(y_1, sigma_eps^2)``) and the likelihood is that of ``y_2, ..., y_100`` given
# ``y_1``. We maximise it over the log-variances with scipy.


def kalman(y, var_eps, var_eta):
    """Diffuse Kalman filter of the local-level model: filtered means, variances, loglik."""
    mean, var = np.empty(y.size), np.empty(y.size)
    mean[0], var[0] = y[0], var_eps
    loglik = 0.0
    for t in range(1, y.size):
        m, p = mean[t - 1], var[t - 1] + var_eta
        f = p + var_eps
        loglik -= 0.5 * (np.log(2 * np.pi * f) + (y[t] - m) ** 2 / f)
        mean[t], var[t] = m + p / f * (y[t] - m), p * var_eps / f
    return mean, var, loglik


def rts(mean, var, var_eta):
    """Rauch-Tung-Striebel smoother on top of the filter: smoothed means and variances."""
    sm, sv = mean.copy(), var.copy()
    for t in range(mean.size - 2, -1, -1):
        gain = var[t] / (var[t] + var_eta)
        sm[t] = mean[t] + gain * (sm[t + 1] - mean[t])
        sv[t] = var[t] + gain**2 * (sv[t + 1] - var[t] - var_eta)
    return sm, sv


res = minimize(
    lambda th: -kalman(y, *np.exp(th))[2],
    np.log([y.var() / 2, y.var() / 20]),
    method="Nelder-Mead",
    options={"xatol": 1e-8, "fatol": 1e-10},
)
exact_eps, exact_eta = np.exp(res.x)
exact_loglik = -res.fun

# %%
# The same from dasim
# -------------------
# ``EnKF(noise="mle")`` learns the standard deviations of the persistence model's
# increments and of the observation noise by maximising the ensemble's log-evidence,
# with the same random numbers at every evaluation. ``forecast_first=False`` puts the
# initial ensemble (drawn from the climatology of the series) at the first observation,
# as the textbook model has its prior at ``t = 1``. As in the diffuse likelihood, the
# first observation's own term is left out of the evidence. ``fit`` takes a 2-D array,
# one column per observed component.
enkf = EnKF(n_members=2000, noise="mle", forecast_first=False, random_state=0)
enkf.fit(y[:, None])
learned_eps, learned_eta = enkf.noise_std_[0] ** 2, enkf.process_noise_[0] ** 2

print(f"{'':<22} {'sigma_eps^2':>11} {'sigma_eta^2':>11} {'loglik':>9}")
print(f"{'Kalman filter, exact':<22} {exact_eps:>11.1f} {exact_eta:>11.1f} {exact_loglik:>9.2f}")
print(
    f"{'EnKF, noise=mle':<22} {learned_eps:>11.1f} {learned_eta:>11.1f} {enkf.log_evidence_:>9.2f}"
)
print(f"{'Durbin & Koopman':<22} {15099:>11.1f} {1469.1:>11.1f} {-632.54:>9.2f}")

# %%
# For contrast, the default ``noise="moments"`` reads the observations as if they were
# the states: the variance of the raw increments and the spread of the series, both far
# from the maximum-likelihood values.
naive = EnKF(n_members=200, random_state=0).fit(y[:, None])
print(
    f"moments: sigma_eps^2 = {naive.observation_.noise_std[0] ** 2:.0f}, "
    f"sigma_eta^2 = {naive.model_.process_noise[0] ** 2:.0f}"
)

# %%
# Filtered and smoothed level
# ---------------------------
# The filtered level at year ``t`` uses the flows up to ``t``; the smoothed level uses
# all 100. The ensemble Kalman smoother :class:`~dasim.smoothers.EnKS` runs with the
# learned components (``enkf.model_``, ``enkf.observation_``) and, like the filter, takes
# the DataArray as ``y`` and labels its output with the years. To mimic the diffuse
# prior we start both from a very wide ensemble at the first observation (a standard
# deviation a thousand times the series'): with ``forecast_first=False`` the first
# analysis then gives ``mu_1 | y_1 ~ N(y_1, sigma_eps^2)``, as the exact filter does.
rng = np.random.default_rng(1)
wide = y.mean() + 1e3 * y.std() * rng.standard_normal((2000, 1))
ds_filter = enkf.assimilate(nile, initial_ensemble=wide, keep_forecast=False)
enks = EnKS(enkf.model_, enkf.observation_, n_members=2000, forecast_first=False, random_state=0)
enks.fit(y[:, None])
ds_smooth = enks.assimilate(nile, initial_ensemble=wide, keep_forecast=False)

kf_mean, kf_var = kalman(y, exact_eps, exact_eta)[:2]
ks_mean, ks_var = rts(kf_mean, kf_var, exact_eta)
filt = ds_filter["analysis"].values[:, :, 0]
smooth = ds_smooth["analysis"].values[:, :, 0]
print(
    "largest gap to the exact Kalman means (10^8 m^3): "
    f"filtered {np.max(np.abs(filt.mean(1) - kf_mean)):.1f}, "
    f"smoothed {np.max(np.abs(smooth.mean(1) - ks_mean)):.1f}; "
    f"posterior standard deviations {np.sqrt(ks_var.min()):.0f} to {np.sqrt(kf_var.max()):.0f}"
)

fig, axes = plt.subplots(2, 1, figsize=(9, 7), sharex=True, sharey=True)
for ax, ens, mean, var, label in [
    (axes[0], filt, kf_mean, kf_var, "filtered"),
    (axes[1], smooth, ks_mean, ks_var, "smoothed"),
]:
    ax.plot(years, y, "k.", ms=4, label="flow")
    lo, hi = np.percentile(ens, [5, 95], axis=1)
    ax.fill_between(years, lo, hi, color="C0", alpha=0.3, label="ensemble 90 %")
    ax.plot(years, ens.mean(1), "C0", label=f"{label} level (ensemble mean)")
    ax.plot(years, mean, "C3--", lw=1, label="exact Kalman")
    ax.plot(years, mean + 1.645 * np.sqrt(var), "C3:", lw=1)
    ax.plot(years, mean - 1.645 * np.sqrt(var), "C3:", lw=1)
    ax.set_ylabel("flow (1e8 m^3)")
    ax.legend(loc="upper right", fontsize=8)
axes[1].set_xlabel("year")
axes[0].set_title("Nile at Aswan: local level learned from the observations")
fig.tight_layout()
plt.show()
