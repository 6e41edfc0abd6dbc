"""The joint-covariance-kernel analysis of :class:`~dasim.filters.KDEDiffusionFilter`.

``kernel="joint"``: the KDE of states and predicted observations with a kernel shaped by
their joint covariance, conditioned on the observation in closed form
(:class:`dasim.diffusion.kde_joint.JointKernel`), then sampled by the filter's sampler in
the coordinates that whiten the conditional kernel covariance.
"""

from __future__ import annotations

import numpy as np

__all__ = []


def joint_analysis(filt, forecast, y, predicted, h, rng):
    """One analysis with the joint-covariance kernel (relative bandwidth ``h``)."""
    from ..diffusion.kde import effective_sample_size
    from ..diffusion.kde_joint import JointKernel
    from ..diffusion.kde_sampling import tempered_log_weights

    n = forecast.shape[0]
    mask = ~np.isnan(y)
    obs_noise = filt._obs_noise
    if obs_noise.is_diagonal:
        noise = obs_noise.std[mask]
    else:
        noise = obs_noise.covariance[np.ix_(mask, mask)]
    kernel = JointKernel(forecast, predicted[:, mask], y[mask], noise, h, shrink=filt._shrink)
    log_w, c = kernel.log_w, np.nan
    if filt.bandwidth_y == "ess":
        log_w, beta = tempered_log_weights(log_w, filt._ess_count(n), max_exponent=1.0)
        c = 1.0 / np.sqrt(beta) if beta > 0 else np.inf
    ess = float(effective_sample_size(log_w))
    filt._warn_collapse(ess, n)
    diag = {"ess": ess, "bandwidth_x": h, "bandwidth_y": c, "n_stages": 1.0}
    if kernel.rank == 0:  # no spread left: every member at the conditional mean
        diag.update(n_steps=0.0, nfev=0.0)
        return np.tile(kernel.mixture_moments(log_w)[0], (n, 1)), None, diag
    # whitened coordinates: the kernel is the identity, the isotropic sampler with h = 1
    out, info = filt._draw(kernel.latent_centres(), log_w, 1.0, rng, kernel="isotropic")
    diag.update(n_steps=float(info.get("n_steps", np.nan)), nfev=float(info.get("nfev", np.nan)))
    return kernel.from_latent(out), None, diag
