"""Diffusion building blocks shared by the KDE filter and the learned assimilators.

- :mod:`~dasim.diffusion.schedules`: the noise schedules of both sides, one interface
  (:math:`t \\mapsto (\\alpha(t), \\sigma(t))`, with the SDE's drift and diffusion, the
  probability-flow drift and the marginal moments derived from it): the KDE filter's VE
  and VP schedules and the learned assimilators' cosine schedule.
- :mod:`~dasim.diffusion.kde`: the closed-form conditional score and log-density of a
  diffused Gaussian KDE (chunked with log-sum-exp), written once for numpy arrays and
  torch tensors over the small array namespace of ``_xp`` (the core in ``_kde_core``).
- :mod:`~dasim.diffusion.kde_sampling`: the samplers of the KDE conditional (exact mixture,
  probability-flow ODE, reverse SDE), the covariance-shaped kernel and ESS-targeted
  tempering, and the one-call analysis step.
- :mod:`~dasim.diffusion.solvers`: the solvers both sides share, each over a schedule and
  a model of the diffused density: the probability-flow ODE of a ``score(x, t)`` callable
  (adaptive RK45, in ``_ode``, or fixed-step exponential integrators in the log of the
  noise level), the reverse SDE (Euler-Maruyama), and the predictor-corrector step of the
  learned assimilators' sampler; numpy and torch alike.
- :mod:`~dasim.diffusion.denoising`, :mod:`~dasim.diffusion.networks`,
  :mod:`~dasim.diffusion.training`, :mod:`~dasim.diffusion.windows`,
  :mod:`~dasim.diffusion.guidance`, :mod:`~dasim.diffusion.sampling`: the learned side
  (denoising loss and Tweedie denoiser, score networks, training loop, trajectory
  windows, likelihood guidance, predictor-corrector sampling), which needs torch.

Nothing is imported here: each module is imported where it is used, so that numpy-only
code never loads torch.
"""
