"""Sweeps run unchanged on a dask.distributed cluster through joblib."""

import joblib
import numpy as np
import pytest

from dasim.benchmarks import b1_case, b1_methods, run_case

distributed = pytest.importorskip("distributed")


def test_dask_localcluster_matches_serial_run():
    case = b1_case("l96-10")
    methods = b1_methods("l96-10")
    serial = run_case(case, methods, seeds=[0, 1], n_cycles=30, n_jobs=1, burn_in=10)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
        joblib.parallel_config(backend="dask"),
    ):
        on_cluster = run_case(case, methods, seeds=[0, 1], n_cycles=30, burn_in=10)
    for name in ["rmse", "crps", "spread", "spread_skill"]:
        np.testing.assert_array_equal(on_cluster[name].values, serial[name].values)
