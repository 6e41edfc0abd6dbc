"""Smoothers: the ensemble at every time conditioned on the whole observation window.

A filter's ensemble at time ``t`` is conditioned on the observations up to ``t``; a
smoother's on all of them (or, with a fixed lag ``L``, on those up to ``t + L``). The
smoothers here are estimators with the filters' API (``fit``, ``assimilate``, ``sample``,
``score``) built on the filters' own forward pass:

- :class:`EnKS`: the ensemble Kalman smoother (Evensen and van Leeuwen 2000), as DAPPER
  formulates it: each EnKF analysis applies its ensemble-space transform to the ensembles
  of the whole past window, or of the last ``lag`` cycles.
- :class:`ParticleSmoother`: the bootstrap particle smoother: the :class:`~dasim.filters.
  SIRFilter`'s forward pass, then whole trajectories by ancestry tracing (Kitagawa 1996)
  or by backward simulation (Godsill, Doucet and West 2004).
- :func:`bootstrap_smoother`: the particle smoother as a function of plain callables
  (initial law, transition, log-likelihood), for dynamics that are not a dasim model;
  the reference posterior of benchmark B3.
"""

from .enks import EnKS
from .particle import ParticleSmoother, bootstrap_smoother

__all__ = ["EnKS", "ParticleSmoother", "bootstrap_smoother"]
