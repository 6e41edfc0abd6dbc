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
    from ..diffusion.kde_joint import JointKernel
    from ..diffusion.kde_sampling import default_sigma_max, kde_analysis, tempered_log_weights

    n = forecast.shape[0]
    mask = ~np.isnan(y)
    if filt._noise_std is not None:
        noise = filt._noise_std[mask]
    else:
        noise = filt._noise_cov[np.ix_(mask, mask)]
    kernel = JointKernel(forecast, predicted[:, mask], y[mask], noise, h, shrink=filt._shrink)
    log_w, c = kernel.log_w, np.nan
    if filt.bandwidth_y == "ess":
        log_w, beta = tempered_log_weights(log_w, filt.ess_target * n, max_exponent=1.0)
        c = 1.0 / np.sqrt(beta) if beta > 0 else np.inf
    w = np.exp(log_w - np.max(log_w))
    ess = float(w.sum() ** 2 / np.sum(w * w))
    filt._warn_collapse(ess, n)
    diag = {"ess": ess, "bandwidth_x": h, "bandwidth_y": c, "n_stages": 1.0}
    if kernel.rank == 0:  # no spread left: every member at the conditional mean
        diag.update(n_steps=0.0, nfev=0.0)
        return np.tile(kernel.mixture_moments(log_w)[0], (n, 1)), None, diag
    centres = kernel.latent_centres()
    sigma_max = filt.sigma_max
    if sigma_max is None and filt.schedule == "ve":
        sigma_max = default_sigma_max(centres, 1.0)
    torch_backend = filt.device_ != "numpy"
    out, info = kde_analysis(
        centres,
        log_w,
        sigma_x=1.0,
        sigma_max=sigma_max,
        schedule=filt.schedule,
        beta_max=filt.beta_max,
        sampler=filt.sampler,
        rtol=filt.rtol,
        atol=filt.atol,
        n_steps=filt.n_steps,
        rng=rng,
        backend="torch" if torch_backend else "numpy",
        device=filt.device_ if torch_backend else None,
        chunk_size=filt.chunk_size,
        ode_solver=filt.ode_solver,
        ode_steps=filt.ode_steps,
        score_dtype=filt.score_dtype,
    )
    diag.update(n_steps=float(info.get("n_steps", np.nan)), nfev=float(info.get("nfev", np.nan)))
    return kernel.from_latent(out), None, diag
