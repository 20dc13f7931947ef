"""Selection kernels: pick cost per strategy, compiled against the uncompiled reference.

The reference is the same fastrpc/_core/select.py source run as plain Python, measured in
the same run; the report gives picks/s and the compiled/reference ratio.
"""
import importlib.util
import os

import numpy as np
import pytest

import fastrpc._core.select as compiled
from fastrpc.net.endpoint import Endpoint
from fastrpc.balancer.strategies import build_ring, geo_tiers

spec = importlib.util.spec_from_file_location(
    "fastrpc_select_reference", os.path.join(os.path.dirname(compiled.__file__), "select.py"))
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)

SIZES = [10, 1_000, 10_000]
KERNELS = ["random", "weighted_random", "round_robin", "weighted_round_robin",
           "least_connections", "p2c", "p2c_ewma", "consistent_hash", "geo"]


def make_kernel(sel, name, n):
    rng = np.random.default_rng(n)
    t = sel.EndpointTable(n, seed=3)
    t.set_weights(rng.integers(1, 5, n).astype(float))
    eps = [Endpoint(f"tcp://10.{i // 65536}.{i // 256 % 256}.{i % 256}:7000",
                    weight=1, lat=float(rng.uniform(-60, 60)), lon=float(rng.uniform(-170, 170)))
           for i in range(n)]
    if name == "consistent_hash":
        points, owners = build_ring(eps, 20)
        return sel.RingKernel(t, points, owners, 1.25)
    if name == "geo":
        members, starts = geo_tiers(eps, (48.8, 2.3), None, 2000.0)
        return sel.GeoKernel(t, members, starts, 64.0)
    cls = {"random": "RandomKernel", "weighted_random": "WeightedRandomKernel",
           "round_robin": "RoundRobinKernel", "weighted_round_robin": "SmoothWeightedKernel",
           "least_connections": "LeastConnectionsKernel", "p2c": "P2CKernel",
           "p2c_ewma": "P2CEwmaKernel"}[name]
    return getattr(sel, cls)(t)


@pytest.mark.parametrize("impl", ["reference", "compiled"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", KERNELS)
def test_pick(benchmark, report, name, n, impl):
    kernel = make_kernel(compiled if impl == "compiled" else reference, name, n)
    benchmark.group = f"pick: {name} at {n:,}"
    i = benchmark(kernel.pick, 12345)
    assert 0 <= i < n
    if not getattr(benchmark, "disabled", False):
        report.baseline(f"pick: {name} at {n:,} endpoints", "reference", "picks/s")
        report.add(f"pick: {name} at {n:,} endpoints", impl, 1 / benchmark.stats.stats.median)


@pytest.mark.parametrize("name", ["random", "round_robin", "weighted_random", "weighted_round_robin"])
def test_pick_many(benchmark, report, name):
    kernel = make_kernel(compiled, name, 1_000)
    out = np.zeros(1_000_000, dtype=np.int64)
    benchmark.group = "pick_many at 1,000"
    assert benchmark(kernel.pick_many, out) == len(out)
    assert 0 <= out.min() and out.max() < 1_000
    if not getattr(benchmark, "disabled", False):
        report.baseline("batch picks at 1,000 endpoints", "random", "picks/s")
        report.add("batch picks at 1,000 endpoints", name, len(out) / benchmark.stats.stats.median)
