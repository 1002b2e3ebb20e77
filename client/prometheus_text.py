"""Reading Prometheus text exposition (the scheduler's and Triton's ``/metrics``) into numbers.

One parser for the benches, the demo and the tests, so that a sample line is read the same way everywhere: a
sample is keyed by its exposition text up to the value, ``name{label="v",...}`` exactly as the server printed it
(``sched_requests_total{outcome="ok"}``), so a key can be written by hand in a test. Comments and blank lines are
skipped; a trailing timestamp is ignored; a line that is not a sample is an error that quotes it.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterable, Mapping

_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _labels_end(line: str, start: int) -> int:
    """Index of the ``}`` that closes the label set opened at ``start`` (quoted values may hold ``}``)."""
    quoted = escaped = False
    for i in range(start + 1, len(line)):
        c = line[i]
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == "}" and not quoted:
            return i
    raise ValueError(f"metrics line {line!r}: unclosed label set")


def parse_line(line: str) -> tuple[str, float]:
    """``'a{b="c"} 1.5'`` -> (``'a{b="c"}'``, 1.5)."""
    brace, space = line.find("{"), line.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        end = _labels_end(line, brace) + 1
        key, rest = line[:end], line[end:]
    else:
        key, _, rest = line.partition(" ")
    fields = rest.split()
    if not key or not fields:
        raise ValueError(f"metrics line {line!r}: expected 'name[{{labels}}] value'")
    try:
        return key, float(fields[0])
    except ValueError:
        raise ValueError(f"metrics line {line!r}: value {fields[0]!r} is not a number") from None


def parse(text: str, prefixes: Iterable[str] | None = None) -> dict[str, float]:
    """Every sample of ``text`` as {key: value}; with ``prefixes``, only those whose key starts with one."""
    wanted = tuple(prefixes) if prefixes is not None else None
    out: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or (wanted is not None and not line.startswith(wanted)):
            continue
        key, value = parse_line(line)
        out[key] = value
    return out


def metrics_url(address: str) -> str:
    """``host:port`` -> ``http://host:port/metrics``; a URL with a scheme is used as it is."""
    return address if "://" in address else f"http://{address}/metrics"


def fetch(address: str, timeout_s: float = 10.0, headers: Mapping[str, str] | None = None) -> str:
    """The exposition text at ``address`` (``host:port`` or a full URL, see ``metrics_url``)."""
    req = urllib.request.Request(metrics_url(address), headers=dict(headers or {}))
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        body: bytes = r.read()
    return body.decode()


def scrape(
    address: str,
    prefixes: Iterable[str] | None = None,
    timeout_s: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """``parse(fetch(address))``: the samples at ``address`` now."""
    return parse(fetch(address, timeout_s, headers), prefixes)


def name_of(key: str) -> str:
    """The metric name of a sample key: ``'a_total{b="c"}'`` -> ``'a_total'``."""
    return key.partition("{")[0]


def labels(key: str) -> dict[str, str]:
    """The labels of a sample key: ``'a{b="c",d="e"}'`` -> {'b': 'c', 'd': 'e'} (escapes kept as written)."""
    _, brace, rest = key.partition("{")
    if not brace:
        return {}
    return {m.group(1): m.group(2) for m in _LABEL.finditer(rest[:-1])}


def by_label(samples: Mapping[str, float], name: str, label: str) -> dict[str, float]:
    """The samples of metric ``name`` keyed by their ``label``: ``by_label(s, "sched_requests_total", "outcome")``
    -> {'ok': 12.0, 'late': 1.0, ...}. Samples without that label are left out."""
    out: dict[str, float] = {}
    for key, value in samples.items():
        if name_of(key) == name:
            lab = labels(key)
            if label in lab:
                out[lab[label]] = value
    return out


def value(samples: Mapping[str, float], key: str, default: float | None = None) -> float:
    """The sample ``key`` (a bare name or ``name{labels}`` as exposed); ``default`` if absent, else KeyError."""
    if key in samples:
        return samples[key]
    if default is not None:
        return default
    raise KeyError(f"no sample {key!r} in the metrics ({len(samples)} samples)")
