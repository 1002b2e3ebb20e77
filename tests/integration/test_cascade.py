"""Cascade escalation through the real stack: tritonserver + `superserve serve --policy cascade`,
requests from tritonclient. The images are chosen from the recorded test-split behaviour of the
committed weights, far from the thresholds, so the served confidences fall on the known side."""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from superserve.client.prometheus_text import scrape
from superserve.scheduler import paths
from superserve.scheduler.sidecar.server import serve_subprocess
from superserve.supernet.data import load_split
from superserve.supernet.validation import ValidationRecord, default_path
from tests.conftest import committed_profile, free_ports

PROFILE = committed_profile()
FIRST, LAST = PROFILE.subnets[0].name, PROFILE.subnets[-1].name
RECORD = ValidationRecord.load(default_path(paths.repo_root(), PROFILE.supernet, "test"), PROFILE.supernet)
IMAGES, _ = load_split("test")
UNSURE = np.flatnonzero(RECORD.confidence(FIRST) < 0.4)[:6]
SURE = np.flatnonzero(RECORD.confidence(FIRST) > 0.97)[:6]


PLAN = {"supernet": PROFILE.supernet, "measure": "max_softmax",
        "gears": [{"min_rps": 0, "max_rps": 1e9, "max_batch": 16,
                   "stages": [{"subnet": FIRST, "threshold": 0.5}, {"subnet": LAST, "threshold": None}]}]}


@pytest.fixture(scope="module")
def cascade_sidecar(triton_plain, tmp_path_factory):
    """Plan: one gear, the least accurate subnet (threshold 0.5) then the most accurate. No reply
    margin and no latency scaling, so a tight SLO leaves no room for a second stage."""
    tmp = tmp_path_factory.mktemp("cascade")
    (tmp / "plan.json").write_text(json.dumps(PLAN))
    http, grpc = free_ports(2)
    args = ["--http-port", str(http), "--grpc-port", str(grpc), "--worker", triton_plain.cfg.grpc_url,
            "--profile", str(sorted((paths.repo_root() / "profiles").glob("*.json"))[0]), "--policy", "cascade",
            "--plan", str(tmp / "plan.json"), "--margin-ms", "0", "--no-adapt-latency"]
    with serve_subprocess(args, str(tmp / "serve.log")) as proc:
        yield f"127.0.0.1:{http}", f"127.0.0.1:{grpc}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, (tmp / "serve.log").read_text()


def ask(url, i, **params):
    c = grpcclient.InferenceServerClient(url)
    inp = grpcclient.InferInput("INPUT", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(IMAGES[i:i + 1])
    r = c.infer("supernet", [inp], parameters=params)
    assert r.as_numpy("LOGITS").shape == (1, 10)
    return json.loads(r.as_numpy("INFO")[0][0])


def test_the_chosen_images_are_on_the_known_sides():
    assert len(UNSURE) == 6 and len(SURE) == 6


def test_min_confidence_escalates_when_the_slack_allows(cascade_sidecar):
    for i in UNSURE:
        info = ask(cascade_sidecar[1], i, slo_ms=2000, min_confidence=0.999)
        assert info["escalations"] == 1 and info["subnets"] == [FIRST, LAST], info
        assert info["subnet"] == LAST and info["accuracy"] == PROFILE.subnets[-1].accuracy


def test_min_confidence_does_not_escalate_when_the_slo_is_tight(cascade_sidecar):
    # the SLO fits one batch-1 run of the first stage plus 0.5 ms: no subnet fits in what is left
    tight = PROFILE.get(FIRST).at(1) + 0.5
    for i in UNSURE:
        info = ask(cascade_sidecar[1], i, slo_ms=tight, min_confidence=0.999)
        assert info["escalations"] == 0 and len(info["subnets"]) == 1, info


def test_the_plans_threshold_applies_when_the_request_sets_none(cascade_sidecar):
    for i in UNSURE:
        assert ask(cascade_sidecar[1], i, slo_ms=2000)["subnets"] == [FIRST, LAST]
    for i in SURE:
        info = ask(cascade_sidecar[1], i, slo_ms=2000)
        assert info["subnets"] == [FIRST] and info["confidence"] > 0.9, info
    # min_confidence 0: any answer is confident enough
    assert ask(cascade_sidecar[1], UNSURE[0], slo_ms=2000, min_confidence=0)["subnets"] == [FIRST]


def test_escalations_are_counted_in_metrics(cascade_sidecar):
    before = _metric(cascade_sidecar[0], "sched_escalations_total")
    ask(cascade_sidecar[1], UNSURE[0], slo_ms=2000, min_confidence=0.999)
    assert _metric(cascade_sidecar[0], "sched_escalations_total") == before + 1


def test_bad_min_confidence_is_a_clear_error(cascade_sidecar):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="min_confidence"):
        ask(cascade_sidecar[1], 0, min_confidence=1.5)
    assert ask(cascade_sidecar[1], 0, slo_ms=2000)["subnet"]  # and it keeps serving


def _metric(http_url, name):
    return scrape(http_url, timeout_s=5)[name]


def test_the_record_replays_the_live_answers(cascade_sidecar):
    """The simulator's answers come from the validation record: what real Triton answers the live stack gets
    (their confidences) lead to the same escalations as the record's, request by request. One request at a
    time, so this checks the record, not the scheduling (tests/unit/test_lifecycle_equivalence.py checks
    that the engine and the simulator queue, batch, drop and escalate alike under a bursty load)."""
    from superserve.scheduler.core.gears import GearPlan
    from superserve.scheduler.policies import CascadePolicy
    from superserve.scheduler.offline.sim import SimRequest, simulate

    conf = RECORD.confidence(FIRST)
    picks = [int(i) for i in np.flatnonzero(np.abs(conf - 0.5) > 0.05)[:24]]  # clear of the threshold
    live = [ask(cascade_sidecar[1], i, slo_ms=2000)["subnets"] for i in picks]
    sim = simulate(CascadePolicy(GearPlan.from_dict(PLAN)), PROFILE,
                   [SimRequest(k * 1000.0, 2000.0, i) for k, i in enumerate(picks)], RECORD)
    assert [o.subnets for o in sim] == live
    assert 0 < sum(len(s) == 2 for s in live) < len(live)  # both kinds of decision were exercised
