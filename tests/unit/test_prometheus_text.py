"""The one Prometheus text parser (client/prometheus_text.py), read against the scheduler's own /metrics text
(metrics.render) and Triton-style lines, so the benches and tests read the numbers the server wrote."""

from __future__ import annotations

import pytest

from superserve.client import prometheus_text as pt
from superserve.scheduler.core.stats import Stats
from superserve.scheduler.sidecar.metrics import render


def test_the_schedulers_exposition_reads_back_as_written():
    s = Stats()
    s.requests.update(ok=12, late=3, dropped=1)
    s.queue_depth = 7
    s.worker_healthy = {"10.0.0.1:9000": 1, "10.0.0.2:9000": 0}
    s.worker_batches.update({("10.0.0.1:9000", "ok"): 5})
    s.batch_size.observe(8)
    s.batch_size.observe(3)
    samples = pt.parse(render(s))
    assert samples['sched_requests_total{outcome="ok"}'] == 12.0
    assert samples["sched_queue_depth"] == 7.0
    assert samples['sched_batch_size_bucket{le="+Inf"}'] == 2.0 and samples["sched_batch_size_sum"] == 11.0
    assert pt.by_label(samples, "sched_requests_total", "outcome") == {
        "ok": 12.0,
        "late": 3.0,
        "dropped": 1.0,
        "invalid": 0.0,
        "overloaded": 0.0,
        "error": 0.0,
    }
    assert pt.by_label(samples, "sched_worker_healthy", "worker") == {"10.0.0.1:9000": 1.0, "10.0.0.2:9000": 0.0}
    key = 'sched_worker_batches_total{worker="10.0.0.1:9000",outcome="ok"}'
    assert pt.labels(key) == {"worker": "10.0.0.1:9000", "outcome": "ok"} and pt.name_of(key) == pt.name_of(
        "sched_worker_batches_total"
    )
    assert not any(k.startswith("#") for k in samples)
    only = pt.parse(render(s), prefixes=("sched_requests_total{", "sched_queue_depth"))
    assert set(only) == {
        f'sched_requests_total{{outcome="{o}"}}' for o in ("ok", "late", "dropped", "invalid", "overloaded", "error")
    } | {"sched_queue_depth"}


def test_quoted_braces_spaces_timestamps_and_special_values():
    text = "\n".join(
        [
            "# TYPE nv_inference_count counter",
            'nv_inference_count{model="supernet",version="1"} 42 1700000000000',
            'odd{msg="a } b, \\"quoted\\""} 1.5e3',
            "up +Inf",
            "down NaN",
            "",
        ]
    )
    samples = pt.parse(text)
    assert samples['nv_inference_count{model="supernet",version="1"}'] == 42.0
    assert samples['odd{msg="a } b, \\"quoted\\""}'] == 1500.0
    assert pt.labels('odd{msg="a } b, \\"quoted\\""}') == {"msg": 'a } b, \\"quoted\\"'}
    assert samples["up"] == float("inf") and samples["down"] != samples["down"]
    assert pt.value(samples, "up") == float("inf") and pt.value(samples, "missing", 0.0) == 0.0
    with pytest.raises(KeyError, match="missing"):
        pt.value(samples, "missing")


@pytest.mark.parametrize(
    "line, what",
    [("sched_queue_depth", "expected"), ('x{a="1" 3', "unclosed"), ("sched_queue_depth seven", "not a number")],
)
def test_a_line_that_is_not_a_sample_is_an_error_quoting_it(line, what):
    with pytest.raises(ValueError, match=what) as e:
        pt.parse(line + "\n")
    assert line.split()[0] in str(e.value)


def test_addresses_become_metrics_urls():
    assert pt.metrics_url("10.0.0.1:9000") == "http://10.0.0.1:9000/metrics"
    assert pt.metrics_url("https://h:1/metrics") == "https://h:1/metrics"
