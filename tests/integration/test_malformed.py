"""Malformed requests get 400 / INVALID_ARGUMENT naming what is wrong, never a 5xx (issue 12, item 2),
and are counted in /metrics; a seeded property-based fuzz over both protocols keeps it so, with good
requests interleaved and all served. Real tritonserver and real ``superserve serve``."""
from __future__ import annotations

import gzip
import json
import urllib.request
import zlib

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from tritonclient.grpc import service_pb2

from superserve.client.fuzz_cases import (GRPC_INFER, GRPC_JUNK, HTTP_CASES, Http, good_body, good_grpc_request,
                                          grpc_requests, http_requests, scrape)


def test_malformed_http_requests_get_400_naming_the_field(sidecar):
    http_url, _ = sidecar
    c = Http(http_url)
    before = scrape(http_url)
    for name, (body, headers, field) in HTTP_CASES.items():
        status, text = c.post(body, headers)
        assert status == 400 and field in text.decode(errors="replace"), (name, status, text[:300])
    # An honest Content-Encoding is decoded and served.
    for enc, pack in (("gzip", gzip.compress), ("deflate", zlib.compress)):
        status, text = c.post(pack(json.dumps(good_body()).encode()), {"Content-Encoding": enc})
        assert status == 200, (enc, text[:300])
    after = scrape(http_url)
    assert after['sched_requests_total{outcome="invalid"}'] - before['sched_requests_total{outcome="invalid"}'] \
        == len(HTTP_CASES)
    assert after["sched_unexpected_errors_total"] == before["sched_unexpected_errors_total"] == 0


def _raw_infer(channel):
    return channel.unary_unary(GRPC_INFER)


def test_undecodable_grpc_protobuf_gets_invalid_argument(sidecar):
    http_url, grpc_url = sidecar
    before, tried = scrape(http_url), 0
    with grpc.insecure_channel(grpc_url) as ch:
        for junk in GRPC_JUNK:
            try:
                service_pb2.ModelInferRequest.FromString(junk)
            except Exception:  # noqa: BLE001 - only junk protobuf itself refuses is a valid case here
                pass
            else:
                continue
            with pytest.raises(grpc.RpcError) as e:
                _raw_infer(ch)(junk, timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "protobuf" in e.value.details()
            tried += 1
    assert tried >= 3
    after = scrape(http_url)
    assert after['sched_requests_total{outcome="invalid"}'] > before['sched_requests_total{outcome="invalid"}']
    assert after["sched_unexpected_errors_total"] == 0


# -- the fuzz (generators in client/fuzz_cases.py, shared with superserve bench-fuzz) -----------------
CLIENT_MISTAKE_HTTP = {400, 404, 413, 504}  # 504: a valid request whose fuzzed slo_ms is too tight
GRPC_OK = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.DEADLINE_EXCEEDED}
FUZZ = settings(max_examples=1500, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.mark.slow
def test_fuzz_http_and_grpc_no_5xx_and_good_requests_served(sidecar):
    http_url, grpc_url = sidecar
    c, good = Http(http_url), json.dumps(good_body()).encode()
    counts = {"http": 0, "grpc": 0, "good": 0}
    good_req = good_grpc_request()

    def interleave_good(ch):
        if (counts["http"] + counts["grpc"]) % 100 == 0:
            status, text = c.post(good)
            assert status == 200, text[:300]
            r = service_pb2.ModelInferResponse.FromString(_raw_infer(ch)(good_req, timeout=30))
            assert [o.name for o in r.outputs] == ["LOGITS", "INFO"]
            counts["good"] += 2

    @FUZZ
    @given(http_requests())
    def http_fuzz(case):
        body, headers = case
        counts["http"] += 1
        status, text = c.post(body, headers)
        assert status < 500 or status == 504, (status, text[:300], body[:200], headers)
        assert status in CLIENT_MISTAKE_HTTP or status == 200, (status, text[:300])
        interleave_good(ch)

    @FUZZ
    @given(grpc_requests())
    def grpc_fuzz(data):
        counts["grpc"] += 1
        try:
            _raw_infer(ch)(data, timeout=30)
        except grpc.RpcError as e:
            assert e.code() in GRPC_OK, (e.code(), e.details(), data[:200])
        interleave_good(ch)

    before = scrape(http_url)
    with grpc.insecure_channel(grpc_url) as ch:
        http_fuzz()
        grpc_fuzz()
    after = scrape(http_url)
    assert counts["http"] >= 1000 and counts["grpc"] >= 1000 and counts["good"] >= 20, counts
    assert after["sched_unexpected_errors_total"] == before["sched_unexpected_errors_total"]
    assert after['sched_requests_total{outcome="error"}'] == before['sched_requests_total{outcome="error"}']
    assert urllib.request.urlopen(f"http://{http_url}/v2/health/ready").status == 200
