"""client/phases.py: a client's send and receive times joined with the sidecar's request log by request id."""
from superserve.client import phases
from superserve.client.loadgen import Record


def _rec(i, sent, latency, slo=100.0, outcome="ok", status="OK"):
    return Record(index=i, send_s=0.0, lag_ms=0.0, slo_ms=slo, latency_ms=latency, outcome=outcome, status=status,
                  sent_ms=sent)


def test_phases_are_the_gaps_between_the_four_stamps_and_only_answers_in_both_are_joined():
    records = [_rec(0, 1000.0, 30.0), _rec(1, 1010.0, 150.0, outcome="late"), _rec(2, 1020.0, 5.0, status="DEADLINE")]
    logged = [{"id": "0", "decoded": 1002.0, "answered": 1020.0, "encoded": 1021.0},
              {"id": "1", "decoded": 1090.0, "answered": 1140.0, "encoded": 1141.0},
              {"id": "7", "decoded": 0.0, "answered": 0.0, "encoded": 0.0}]
    joined = phases.join(records, logged)
    assert joined == [
        {"to_scheduler": 2.0, "in_scheduler": 18.0, "encode": 1.0, "to_client": 9.0, "slo_ms": 100.0, "late": False},
        {"to_scheduler": 80.0, "in_scheduler": 50.0, "encode": 1.0, "to_client": 19.0, "slo_ms": 100.0, "late": True}]
    s = phases.summarize(joined)
    assert s["n"] == 2 and s["late"] == 1
    assert s["late_answers"]["to_scheduler"]["p50"] == 80.0
    assert s["late_blame"] == {"to_scheduler": 1, "to_client": 0, "scheduler": 0}


def test_a_late_answer_is_blamed_on_the_scheduler_only_when_its_own_part_overran_the_slo():
    def row(to_scheduler, in_scheduler, to_client, late):
        return {"to_scheduler": to_scheduler, "in_scheduler": in_scheduler, "encode": 1.0, "to_client": to_client,
                "slo_ms": 100.0, "late": late}

    joined = [row(1.0, 104.0, 1.0, True), row(5.0, 90.0, 30.0, True), row(1.0, 10.0, 1.0, False)]
    assert phases.summarize(joined)["late_blame"] == {"to_scheduler": 0, "to_client": 1, "scheduler": 1}
    assert phases.summarize([]) == {}


def test_a_call_with_a_grpc_deadline_splits_the_way_in_at_the_moment_grpc_read_it():
    rec = _rec(0, 1000.0, 60.0)
    rec.timeout_s = 0.1  # the client's deadline: its SLO, 100 ms after gRPC read the call
    logged = [{"id": "0", "decoded": 1025.0, "answered": 1050.0, "encoded": 1051.0, "deadline": 1003.0 + 100}]
    (j,) = phases.join([rec], logged)
    assert j["to_grpc"] == 3.0 and j["in_grpc"] == 22.0 and j["to_scheduler"] == 25.0
    s = phases.summarize([j])
    assert s["all"]["in_grpc"]["p50"] == 22.0 and s["late_answers"]["in_grpc"] == {}
    rec.timeout_s = 30.1  # sent rounded up by gRPC: no split
    (j,) = phases.join([rec], [dict(logged[0], deadline=1003.0 + 30_200)])
    assert "in_grpc" not in j and "to_grpc" not in j and j["to_scheduler"] == 25.0
