"""``dasim demo``: the KDE filter beside the EnKF and the SIR filter on a bimodal posterior.

The case is B2's ``l63-z``
(:data:`dasim.benchmarks.nonlinear_filtering.B2_CASES`): Lorenz-63 observed through
``z`` alone with noise standard deviation 2. The dynamics and the observation are
unchanged by ``(x, y) -> (-x, -y)`` and the climatological prior is symmetric too, so the
posterior of ``(x, y)`` has two mirror-image modes of equal mass, one around the truth and
one around its mirror image. A bootstrap particle filter with many particles, started from
the same climatology as the filters and symmetrised (each particle also stands at its
mirror image with half its weight), stands for the exact posterior.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.base import clone
from threadpoolctl import threadpool_limits

from . import metrics
from .filters import EnKF, KDEDiffusionFilter, SIRFilter
from .filters._resampling import resample

#: Cycles the truth runs (and drops) before the first observed cycle, so that its initial
#: state is a climatological state but not one of the pool states the ensembles start from.
_TRUTH_SPINUP = 50
#: Reference particles drawn at each shown cycle as the W2 target.
_W2_TARGET = 600
#: W2's time mean is over every ``_W2_STRIDE``-th cycle after the burn-in.
_W2_STRIDE = 4
#: Size of the climatology pool (:meth:`DynamicalModel.climatology`'s smallest).
_POOL = 16384
#: The symmetry of the case: (x, y, z) -> (-x, -y, z).
_MIRROR = np.array([-1.0, -1.0, 1.0])
#: Colours of the methods in the figure.
_COLOURS = {"KDE filter": "tab:orange", "EnKF": "tab:blue", "SIR filter": "tab:green"}


@dataclass
class DemoResult:
    """What :func:`run_demo` computed (see there)."""

    X: np.ndarray
    y: np.ndarray
    runs: dict
    reference: tuple
    window: slice
    shown: list
    burn_in: int
    n_members: int
    n_reference: int
    seconds_reference: float
    scores: dict = field(default_factory=dict)


#: The KDE filter's settings: the paper's configuration (isotropic kernel, simulated
#: observations, black-box) with the exact mixture sampler and fixed bandwidths from B2's
#: grid (``b2_grids("l63-z")``): sigma_x = 0.5, sigma_y = 4 = 2 R^(1/2). The robust
#: configuration (``kernel="covariance"``, ``shrink=True``, ``likelihood="known"``,
#: ``bandwidth_y="ess"``) spreads members along the segment joining the two modes here,
#: since the forecast covariance that scales its kernel spans both.
KDE_PARAMS = {
    **KDEDiffusionFilter.PAPER_PARAMS,
    "sampler": "mixture",
    "bandwidth_x": 0.5,
    "bandwidth_y": 4.0,
    "device": "numpy",
}


def _filters(model, obs, n_members):
    return {
        "KDE filter": KDEDiffusionFilter(model, obs, n_members=n_members, **KDE_PARAMS),
        "EnKF": EnKF(model, obs, n_members=n_members, inflation=1.05),
        "SIR filter": SIRFilter(model, obs, n_members=n_members, jitter=0.5, ess_threshold=0.5),
    }


def _int_seed(*keys):
    """A 31-bit integer seed derived from ``keys``."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] >> 1)


def _normalised(weights, shape):
    if weights is None:
        return np.full(shape, 1.0 / shape[1])
    return weights / weights.sum(axis=1, keepdims=True)


def _bimodality(A, W):
    """Per cycle: ``4 p (1 - p)`` times the separation of the two sign-of-``x`` halves.

    ``p`` is the mass with ``x > 0``; the separation is the distance between the weighted
    centroids (in ``(x, y)``) of the two halves over their pooled standard deviation. It is
    large when both modes carry mass and lie well apart, small while the posterior crosses
    ``x = 0`` (where the halves do not separate the modes).
    """
    pos = A[:, :, 0] > 0
    p = np.sum(W * pos, axis=1)
    xy = A[:, :, :2]
    scores = np.zeros(A.shape[0])
    for k in range(A.shape[0]):
        if not 0 < p[k] < 1:
            continue
        w_pos, w_neg = W[k] * pos[k], W[k] * ~pos[k]
        m_pos = w_pos @ xy[k] / w_pos.sum()
        m_neg = w_neg @ xy[k] / w_neg.sum()
        var = (w_pos @ np.sum((xy[k] - m_pos) ** 2, axis=1)) + (
            w_neg @ np.sum((xy[k] - m_neg) ** 2, axis=1)
        )
        scores[k] = 4 * p[k] * (1 - p[k]) * np.linalg.norm(m_pos - m_neg) / np.sqrt(var / 2)
    return scores, p


def _pick_cycles(score, window, n_shown, min_gap):
    """The ``n_shown`` highest-scoring cycles of ``window``, at least ``min_gap`` apart."""
    order = window.start + np.argsort(-score[window], kind="stable")
    chosen = []
    for k in order:
        if all(abs(int(k) - c) >= min_gap for c in chosen):
            chosen.append(int(k))
        if len(chosen) == n_shown:
            break
    return sorted(chosen)


def run_demo(n_cycles=100, n_members=500, n_reference=30000, seed=0, window=50, n_shown=2):
    """Run the three filters and the reference on one ``l63-z`` observation record.

    Parameters
    ----------
    n_cycles : int
        Assimilation cycles.
    n_members : int
        Ensemble size of the KDE filter, the EnKF and the SIR filter.
    n_reference : int
        Particles of the reference bootstrap particle filter.
    seed : int
        Seed of the truth, the observations, the initial ensembles and the filters.
    window : int
        Cycles of the time window drawn (the last ones).
    n_shown : int
        Cycles at which the posteriors are compared (chosen in the window).

    Returns
    -------
    DemoResult
    """
    from .benchmarks.nonlinear_filtering_cases import B2_CASES
    from .datasets import make_twin_experiment

    case = B2_CASES["l63-z"]
    obs = case.observation
    model = clone(case.model).set_params(process_noise=case.filter_noise)
    rng = np.random.default_rng([int(seed), 1])
    X, y = make_twin_experiment(
        case.model, obs, _TRUTH_SPINUP + n_cycles, random_state=rng, process_noise=False
    )
    X, y = X[_TRUTH_SPINUP:], y[_TRUTH_SPINUP:]
    # The climatology pool has 16384 states; a larger one costs a long spin-up, so the
    # reference draws its particles from the pool with replacement (the model noise
    # separates duplicates within a cycle or two).
    pool = model.climatology(max(_POOL, n_members), rng)
    initial = pool[:n_members]
    initial_ref = pool[rng.choice(pool.shape[0], n_reference, replace=n_reference > pool.shape[0])]
    runs = {}
    with threadpool_limits(1), warnings.catch_warnings():
        # weight-collapse warnings of the small filters are part of what is compared
        warnings.simplefilter("ignore")
        for i, (name, est) in enumerate(_filters(model, obs, n_members).items()):
            est.set_params(random_state=_int_seed(seed, 2, i)).fit(initial)
            # two cycles first, so that the timing leaves out first-call imports
            est.assimilate(y[:2], initial_ensemble=initial, keep_forecast=False)
            start = time.perf_counter()
            ds = est.assimilate(y, initial_ensemble=initial, keep_forecast=False)
            runs[name] = (ds, (time.perf_counter() - start) / n_cycles)
        pf = SIRFilter(
            model,
            obs,
            n_members=n_reference,
            resampling="systematic",
            ess_threshold=1.0,
            random_state=_int_seed(seed, 3),
        ).fit(initial)
        start = time.perf_counter()
        ref = pf.assimilate(y, initial_ensemble=initial_ref, keep_forecast=False)
        seconds_reference = (time.perf_counter() - start) / n_cycles
    # The exact posterior is symmetric: each particle also stands at its mirror image,
    # with half its weight (the particle filter's own mode masses drift from 1/2).
    A_ref = ref["analysis"].values
    A_ref = np.concatenate([A_ref, A_ref * _MIRROR], axis=1)
    W_ref = _normalised(np.tile(ref["weights"].values, 2), A_ref.shape[:2])
    window = slice(max(0, n_cycles - window), n_cycles)
    score, _ = _bimodality(A_ref, W_ref)
    shown = _pick_cycles(score, window, n_shown, min_gap=max(1, (window.stop - window.start) // 5))
    result = DemoResult(
        X=X,
        y=y,
        runs=runs,
        reference=(A_ref, W_ref),
        window=window,
        shown=shown,
        burn_in=min(20, n_cycles // 2),
        n_members=n_members,
        n_reference=n_reference,
        seconds_reference=seconds_reference,
    )
    result.scores = _scores(result, np.random.default_rng([int(seed), 4]))
    return result


def _mass_positive(A, W):
    """Mass with ``x > 0`` per cycle."""
    return np.sum(W * (A[:, :, 0] > 0), axis=1)


def _scores(res, rng):
    """Per method: RMSE, CRPS and W2 (time means), W2 and the mass with x > 0 when shown."""
    A_ref, W_ref = res.reference
    b = res.burn_in
    n_cycles = A_ref.shape[0]
    cycles = sorted(set(range(b, n_cycles, _W2_STRIDE)) | set(res.shown))
    targets, floors = {}, {}
    for k in cycles:
        idx = rng.permutation(resample(W_ref[k], _W2_TARGET + res.n_members, "systematic", rng))
        targets[k], floors[k] = A_ref[k, idx[:_W2_TARGET]], A_ref[k, idx[_W2_TARGET:]]
    mean_cycles = [k for k in cycles if k >= b and (k - b) % _W2_STRIDE == 0]
    out = {}
    entries = {name: (ds["analysis"].values, ds, sec) for name, (ds, sec) in res.runs.items()}
    entries["reference"] = (A_ref, None, res.seconds_reference)
    for name, (A, ds, sec) in entries.items():
        if ds is None:  # the reference: its W2 is the sampling floor of N further draws
            w, W = W_ref, W_ref
            w2 = {k: metrics.wasserstein2(floors[k], targets[k]) for k in cycles}
        else:
            w = ds["weights"].values if "weights" in ds else None
            W = _normalised(w, A.shape[:2])
            w2 = {k: metrics.wasserstein2(A[k], targets[k], weights_a=W[k]) for k in cycles}
        p = _mass_positive(A, W)
        out[name] = {
            "rmse": metrics.time_mean(metrics.rmse(res.X, A, w), b),
            # cycle by cycle: sorting all the reference's particles at once takes GBs
            "crps": float(
                np.mean(
                    [
                        metrics.crps_ensemble(res.X[k], A[k], None if w is None else w[k])
                        for k in range(b, n_cycles)
                    ]
                )
            ),
            "w2_mean": float(np.mean([w2[k] for k in mean_cycles])),
            "w2": [w2[k] for k in res.shown],
            "p_pos": [float(p[k]) for k in res.shown],
            "ms": 1000 * sec,
        }
    return out


def demo_table(res):
    """The text ``dasim demo`` prints: the setting, a table of scores, how to read it."""
    import textwrap

    cycles = "/".join(map(str, res.shown))
    kde = ", ".join(f"{k}={KDE_PARAMS[k]!r}" for k in ("sampler", "bandwidth_x", "bandwidth_y"))
    head = (
        f"Lorenz-63 observed through z only, noise std 2 (B2 case l63-z), {res.X.shape[0]} "
        "cycles. z cannot tell (x, y) from (-x, -y): the posterior has two mirror-image modes "
        f"of equal mass. The reference posterior is a bootstrap particle filter with "
        f"{res.n_reference} particles, symmetrised (each particle also at its mirror image, "
        "with half its weight); every filter starts from draws of the same climatology. KDE "
        f"filter: the paper's configuration (PAPER_PARAMS) with {kde}."
    )
    foot = (
        f"RMSE and CRPS: time means after {res.burn_in} cycles. W2 to the reference: the mean "
        f"over every {_W2_STRIDE}th cycle after them, and at the cycles the figure shows, with "
        "the mass each method puts on x > 0 there. The reference's W2 is the sampling floor "
        f"({res.n_members} further draws of it); with the modes far apart, W2 mostly measures "
        "how the mass splits between them. RMSE rewards picking one mode: the exact "
        "posterior's mean lies between the two."
    )
    lines = [
        textwrap.fill(head, 86),
        "",
        f"{'method':<22}{'RMSE':>6}{'CRPS':>6}{'W2':>6}{'W2 at ' + cycles:>15}"
        f"{'mass x>0':>11}{'ms/cycle':>10}",
    ]
    labels = {name: f"{name} (N={res.n_members})" for name in res.runs}
    labels["reference"] = f"reference (N={res.n_reference})"
    for name, s in res.scores.items():
        shown = "/".join(f"{v:.1f}" for v in s["w2"])
        mass = "/".join(f"{v:.2f}" for v in s["p_pos"])
        lines.append(
            f"{labels[name]:<22}{s['rmse']:6.2f}{s['crps']:6.2f}{s['w2_mean']:6.1f}"
            f"{shown:>15}{mass:>11}{s['ms']:10.1f}"
        )
    lines += ["", textwrap.fill(foot, 86)]
    return "\n".join(lines)


def _display_members(A, w, rng):
    """Equally weighted members of a (weighted) ensemble, for drawing."""
    if w is None:
        return A
    return A[resample(w / w.sum(), A.shape[0], "systematic", rng)]


def plot_demo(res, path):
    """Draw the demo's figure into ``path``: a time window and the posteriors at two cycles."""
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec, GridSpecFromSubplotSpec

    A_ref, W_ref = res.reference
    win = np.arange(res.window.start, res.window.stop)
    names = list(res.runs)
    rng = np.random.default_rng(0)
    members = {}
    for name, (ds, _) in res.runs.items():
        A = ds["analysis"].values
        w = ds["weights"].values if "weights" in ds else None
        members[name] = np.stack(
            [_display_members(A[k], None if w is None else w[k], rng) for k in range(len(A))]
        )
    fig = plt.figure(figsize=(15, 10.5), layout="constrained")
    outer = GridSpec(1, 2, figure=fig, width_ratios=[1.7, 1])
    left = GridSpecFromSubplotSpec(len(names) + 1, 1, outer[0])
    right = GridSpecFromSubplotSpec(len(names), len(res.shown), outer[1])
    fig.suptitle(
        f"Lorenz-63 observed through z only (noise std 2): the posterior of (x, y) has two "
        f"mirror-image modes of equal mass. N = {res.n_members} per filter; reference: "
        f"particle filter, N = {res.n_reference}, symmetrised",
        fontsize=11,
    )

    # z, observed: truth, observations, each filter's mean, the reference's band
    ax_z = fig.add_subplot(left[0])
    mean_ref = np.einsum("tn,tnd->td", W_ref, A_ref)
    sd_ref = np.sqrt(np.einsum("tn,tnd->td", W_ref, (A_ref - mean_ref[:, None]) ** 2))
    ax_z.fill_between(
        win,
        (mean_ref - 2 * sd_ref)[win, 2],
        (mean_ref + 2 * sd_ref)[win, 2],
        color="0.75",
        lw=0,
        label="reference mean ±2 sd",
    )
    for name in names:
        ax_z.plot(
            win,
            members[name][win, :, 2].mean(axis=1),
            color=_COLOURS[name],
            lw=1.2,
            label=f"{name} mean",
        )
    ax_z.plot(win, res.X[win, 2], "k", lw=1.5, label="truth")
    ax_z.plot(win, res.y[win, 0], "o", color="tab:red", ms=3.5, label="observation")
    ax_z.set_ylabel("z (observed)")
    ax_z.set_title("z, the observed component", loc="left", fontsize=10)
    ax_z.legend(ncol=6, fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.07), frameon=False)

    # x, not observed: the reference's density, the filter's members, the truth
    edges = np.linspace(-25, 25, 126)
    dens = np.stack([np.histogram(A_ref[k, :, 0], edges, weights=W_ref[k])[0] for k in win])
    lim = max(20.0, 1.1 * np.abs(res.X[win, 0]).max())
    n_draw = min(members[names[0]].shape[1], 150)
    axes_x = []
    for row, name in enumerate(names, start=1):
        ax = fig.add_subplot(left[row], sharex=ax_z)
        axes_x.append(ax)
        ax.imshow(
            dens.T,
            origin="lower",
            aspect="auto",
            cmap="Greys",
            extent=(win[0] - 0.5, win[-1] + 0.5, edges[0], edges[-1]),
            vmax=0.5 * dens.max(),
            interpolation="nearest",
        )
        pts = members[name][win, :n_draw, 0]
        tt = np.repeat(win, n_draw) + rng.uniform(-0.2, 0.2, win.size * n_draw)
        ax.scatter(tt, pts.ravel(), s=2, color=_COLOURS[name], alpha=0.4, lw=0)
        ax.plot(win, res.X[win, 0], "k", lw=1.3)
        ax.set_ylim(-lim, lim)
        ax.set_ylabel("x (not observed)")
        ax.set_title(
            f"{name}: x of {n_draw} members (dots) over the reference posterior (grey), "
            "truth (black)",
            loc="left",
            fontsize=10,
            color=_COLOURS[name],
        )
    for ax in [ax_z, *axes_x]:
        for k in res.shown:
            ax.axvline(k, color="0.3", ls="--", lw=0.8)
        if ax is not axes_x[-1]:
            ax.tick_params(labelbottom=False)
    axes_x[-1].set_xlabel(
        "assimilation cycle (0.1 time units each); dashed: the cycles shown on the right"
    )
    ax_z.set_xlim(win[0] - 0.5, win[-1] + 0.5)

    # (x, y) at the shown cycles: each method's members over the reference's particles
    for col, k in enumerate(res.shown):
        pts_ref = A_ref[k, resample(W_ref[k], 3000, "systematic", rng)]
        span = 1.15 * max(np.abs(pts_ref[:, :2]).max(), np.abs(res.X[k, :2]).max())
        for row, name in enumerate(names):
            ax = fig.add_subplot(right[row, col])
            ax.scatter(
                pts_ref[:, 0],
                pts_ref[:, 1],
                s=40,
                color="0.6",
                alpha=0.15,
                lw=0,
                label="reference",
            )
            shown = members[name][k]
            ax.scatter(
                shown[:, 0], shown[:, 1], s=4, color=_COLOURS[name], alpha=0.5, lw=0, label=name
            )
            ax.plot(*res.X[k, :2], "*", color="k", ms=12, mec="w", label="truth")
            ax.plot(*(-res.X[k, :2]), "*", color="w", ms=12, mec="k", label="mirror state")
            ax.set_xlim(-span, span)
            ax.set_ylim(-span, span)
            ax.set_aspect("equal")
            s, ref = res.scores[name], res.scores["reference"]
            ax.set_title(
                f"{name}, cycle {k}\nmass x>0: {s['p_pos'][col]:.2f} (reference "
                f"{ref['p_pos'][col]:.2f})",
                fontsize=9,
                color=_COLOURS[name],
            )
            if row == len(names) - 1:
                ax.set_xlabel("x")
            if col == 0:
                ax.set_ylabel("y")
            if row == 0 and col == len(res.shown) - 1:
                ax.legend(fontsize=7, loc="lower right", framealpha=0.9, markerscale=1.5)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _demo_command(args):
    """``dasim demo``: print :func:`demo_table`, write OUT/demo.png (:func:`plot_demo`)."""
    # POT (the W2 distance) would otherwise import torch for a backend the demo never uses
    if "ot" not in sys.modules:
        os.environ.setdefault("POT_BACKEND_DISABLE_PYTORCH", "1")
    res = run_demo(
        n_cycles=args.cycles,
        n_members=args.members,
        n_reference=args.reference_members,
        seed=args.seed,
        window=args.window,
    )
    print(demo_table(res))
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        print("\n(install matplotlib for the figure: pip install dasim[plot])")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_demo(res, out / "demo.png")
    print(f"\nfigure written to {out / 'demo.png'}")
    return 0
