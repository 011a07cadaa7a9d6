import numpy as np
import pytest

from modelfusion.evaluation import measure_latency


def test_measure_latency_reports_positive_numbers():
    batch = np.ones((64, 8))
    stats = measure_latency(lambda x: x @ x.T, batch, repeats=5, warmup=1)
    for key in ("p50_ms", "p99_ms", "mean_ms", "p50_ms_per_sample", "p99_ms_per_sample", "throughput"):
        assert stats[key] > 0
    assert stats["batch_size"] == 64
    assert stats["p99_ms"] >= stats["p50_ms"]


def test_measure_latency_reads_the_size_of_a_dict_batch():
    batch = {"image": np.zeros((16, 3)), "text": ["a"] * 16}
    assert measure_latency(lambda b: None, batch, repeats=2, warmup=0)["batch_size"] == 16


def test_measure_latency_asks_for_n_samples_when_the_size_is_unknown():
    with pytest.raises(TypeError, match="n_samples"):
        measure_latency(lambda b: None, object(), repeats=1)
    assert measure_latency(lambda b: None, object(), repeats=1, n_samples=8)["batch_size"] == 8
