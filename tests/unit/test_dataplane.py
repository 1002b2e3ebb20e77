"""The data plane's handling of a bug: every unexpected exception is counted, logged at most once per
interval (never once per request), and answered as a counted 500."""
import json
import logging

from superserve.scheduler.sidecar.dataplane import DataPlane, ModelSurface, bytes_tensor
from superserve.scheduler.core.stats import Stats
from superserve.scheduler.sidecar.metrics import render


class _Engine:  # only what DataPlane.unexpected reads: the stats the engine publishes
    def __init__(self):
        self.stats, self.workers = Stats(), []


def test_unexpected_errors_counted_each_time_logged_once(caplog):
    plane = DataPlane(_Engine(), ModelSurface("supernet", {}, {}, 64))
    with caplog.at_level(logging.ERROR, logger="superserve.scheduler.sidecar.dataplane"):
        errs = [plane.unexpected(KeyError("x"), "test") for _ in range(50)]
    assert plane.engine.stats.unexpected_errors == 50 and plane.engine.stats.requests["error"] == 50
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is not None
    assert all(e.http_status == 500 and e.counted and "KeyError" in str(e) for e in errs)
    assert "sched_unexpected_errors_total 50" in render(plane.engine.stats)


def test_bytes_tensor_wire_form():
    assert bytes_tensor([b"ab", b""]) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"


def test_info_splice_is_byte_identical_to_json_dumps():
    from superserve.scheduler.core.info import annotate, parse
    row = {"subnet": "d1.1.1-w25.25.25", "accuracy": 0.8, "confidence": 0.5, "margin": 0.1, "queue_ms": None,
           "infer_ms": 1.25, "batch_size": 3, "escalations": 0, "subnets": ["d1.1.1-w25.25.25"]}
    raw = json.dumps(row).encode()  # the backend's form (supernet/serving.py info_rows)
    for q, e, s in ((12.345, 0, ("a",)), (0.0, 2, ("a", "b", "c"))):
        assert annotate(raw, q, e, s) == annotate(row, q, e, s) == json.dumps(
            dict(row, queue_ms=q, escalations=e, subnets=list(s))).encode()
        assert parse(raw, q, e, s) == json.loads(annotate(raw, q, e, s))
    odd = b'{"subnet": "x", "queue_ms": 5}'  # another backend's bytes: the general path
    assert json.loads(annotate(odd, 1.0, 1, ("x", "y"))) == {"subnet": "x", "queue_ms": 1.0, "escalations": 1,
                                                             "subnets": ["x", "y"]}
