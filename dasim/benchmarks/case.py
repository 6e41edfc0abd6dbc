"""The one case type of every benchmark: a setting (:class:`Case`) and a method (:class:`Method`).

A :class:`Case` describes a twin experiment: the model, the observation, the run length
and burn-in, the model noise of the truth and of the filters, the ensemble sizes and
how the initial states are drawn. A :class:`Method` is a labelled filter configuration
with its reference figure. The experiment modules (:mod:`~dasim.benchmarks.dapper_parity`,
:mod:`~dasim.benchmarks.nonlinear_filtering_cases`,
:mod:`~dasim.benchmarks.trajectory_smoothing`) are tables of these; the runner
(:mod:`~dasim.benchmarks.runner`) runs the filtering ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sklearn.base import clone

__all__ = ["Case", "Method"]


@dataclass
class Case:
    """A twin-experiment setting.

    Parameters
    ----------
    name : str
        Identifier used on the command line.
    model : DynamicalModel
        Dynamics of the truth (and of the filters, with ``filter_noise`` added).
    observation : ObservationModel
        Observation operator and noise.
    n_cycles : int, default=1000
        Assimilation cycles per run.
    burn_in : int, default=20
        Cycles dropped before time averages.
    truth_noise : bool, default=False
        Whether the truth receives the model noise.
    filter_noise : float, default=0.0
        Additive model noise in the filters' forecast model (std per cycle).
    description : str, default=""
        One-line description.
    members : tuple of int, default=()
        The ensemble sizes the experiment runs (B2's sizes of BENCHMARKS.md); empty
        where the methods fix their own (B1).
    w2 : bool, default=False
        Whether W2 to a particle-filter reference posterior is computed (B2's
        Lorenz-63 cases).
    initial_mean : array-like or None, default=None
        If given, the initial truth and every initial ensemble member are drawn from
        ``N(initial_mean, initial_var I)`` (DAPPER's ``X0``); otherwise both are independent
        draws from the model's climatology.
    initial_var : float, default=0.0
        Variance of that initial distribution.
    observe_every : int, default=1
        Stride of the observed times, ``0, observe_every, 2 * observe_every, ...``; the
        times between are unobserved (B3's sparse observations).

    Examples
    --------
    >>> from dasim.benchmarks import Case
    >>> from dasim.models import Lorenz63
    >>> from dasim.observations import ObservationModel
    >>> case = Case("tiny", Lorenz63(), ObservationModel("identity"), n_cycles=30, burn_in=10)
    >>> case.n_cycles, case.truth_noise
    (30, False)
    """

    name: str
    model: object
    observation: object
    n_cycles: int = 1000
    burn_in: int = 20
    truth_noise: bool = False
    filter_noise: float = 0.0
    description: str = ""
    members: tuple = ()
    w2: bool = False
    initial_mean: object = None
    initial_var: float = 0.0
    observe_every: int = 1

    def filter_model(self):
        """The filters' forecast model: the case's model with ``filter_noise``.

        Returns
        -------
        DynamicalModel
            An unfitted clone of ``model`` with ``process_noise=filter_noise``.

        Examples
        --------
        >>> from dasim.benchmarks import b1_case
        >>> b1_case("l96-10").filter_model().process_noise
        0.0
        """
        return clone(self.model).set_params(process_noise=self.filter_noise)

    def attrs(self, n_cycles):
        """The setting as result ``attrs`` (netCDF-friendly).

        Parameters
        ----------
        n_cycles : int
            The cycles actually run.

        Returns
        -------
        dict
            ``case``, ``description``, ``n_cycles``, ``burn_in``, ``model``,
            ``observation``, ``filter_noise`` and ``truth_noise``.

        Examples
        --------
        >>> from dasim.benchmarks import b1_case
        >>> b1_case("l96-10").attrs(40)["n_cycles"]
        40
        """
        return {
            "case": self.name,
            "description": self.description,
            "n_cycles": n_cycles,
            "burn_in": self.burn_in,
            "model": repr(self.model),
            "observation": repr(self.observation),
            "filter_noise": self.filter_noise,
            "truth_noise": int(self.truth_noise),
        }


@dataclass
class Method:
    """A filter configuration with its reference figure.

    Parameters
    ----------
    label : str
        Row label in tables.
    estimator : SequentialFilter
        An unfitted filter; ``model`` and ``observation`` are set by the runner.
    reference : float or None
        Published analysis RMSE to compare with (DAPPER's, for B1).
    params : dict
        Extra metadata to store.

    Examples
    --------
    >>> from dasim.benchmarks import Method
    >>> from dasim.filters import EnKF
    >>> Method("EnKF N=10", EnKF(n_members=10), reference=0.557)
    Method(label='EnKF N=10', estimator=EnKF(n_members=10), reference=0.557, params={})
    """

    label: str
    estimator: object
    reference: float | None = None
    params: dict = field(default_factory=dict)
