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


def test_a_client_deadline_before_the_slo_shortens_the_target_the_engine_plans_with(tmp_path):
    """A gRPC deadline (on the scheduler's clock) that ends before now + slo_ms is what the engine gets as the
    request's latency target; a later one changes nothing; the request log records it with the three stamps."""
    import asyncio

    import numpy as np

    from superserve.scheduler.core.clock import Clock
    from superserve.scheduler.sidecar.dataplane import InferRequest, InputTensor
    from superserve.scheduler.sidecar.engine import Answer, EngineConfig

    class _Clock(Clock):
        def __init__(self):
            self.t = 1000.0

        def now_ms(self):
            return self.t

    class _Planning(_Engine):  # what DataPlane.infer reads of the engine; infer records what it was asked
        def __init__(self, log):
            super().__init__()
            self.cfg, self.clock, self.request_log, self.asked = EngineConfig(), _Clock(), log, []

        async def infer(self, image, params, model=None):
            self.asked.append(params.slo_ms)
            self.clock.t += 7.0
            return Answer(np.zeros((1, 10), np.float32), [b'{"subnet": "s"}'], "s", 0.0, done_ms=self.clock.t)

        def observe_reply(self, ms):
            pass

    with open(tmp_path / "requests.jsonl", "w") as log:
        engine = _Planning(log)
        plane = DataPlane(engine, ModelSurface("supernet", {}, {}, 64))
        x = InputTensor("INPUT", "FP32", [1, 1, 28, 28], np.zeros(784, np.float32))
        for deadline in (None, 1040.0, 5000.0, 990.0):
            req = InferRequest("supernet", None, [x], {"slo_ms": 100}, id=f"r{deadline}", protocol="grpc",
                               deadline_ms=deadline)
            asyncio.run(plane.infer(req))
            engine.clock.t = 1000.0
    assert engine.asked == [100.0, 40.0, 100.0, 1e-3]
    rows = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert [r.get("deadline") for r in rows] == [None, 1040.0, 5000.0, 990.0]
    assert all(r["decoded"] == 1000.0 and r["answered"] == r["encoded"] == 1007.0 for r in rows)
