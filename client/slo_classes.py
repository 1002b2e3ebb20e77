"""SLO classes: the one grammar in which the load generator (``superserve bench --slo-ms``) and Locust's users
(``--slo-classes``) are told what mix of latency targets and accuracy floors to ask for.

A spec is a comma-separated list of classes, each ``slo_ms[:weight[:min_accuracy]]``:

- ``slo_ms``: the latency target in ms sent as the request parameter ``slo_ms`` (> 0); ``none`` (or ``default``,
  ``-``) sends none, so the server's default applies (Locust only: an open-loop trace needs a number);
- ``weight``: the class's relative share of requests (> 0, default 1; shares are normalised);
- ``min_accuracy``: an accuracy floor sent as ``min_accuracy`` (0..1, default none).

``"100"`` is one class; ``"50:0.5,200:0.5"`` half and half; ``"200:1:0.9,none:3"`` a quarter at 200 ms with a
floor of 0.9, the rest at the server's default. Accuracy-floor mixes drawn independently of the latency targets
(``bench --min-accuracy "0:0.6,0.92:0.4"``) use the same items with the floor first: ``min_accuracy[:weight]``.
Every error names the item and the field that is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_WORDS = ("none", "default", "-")


@dataclass(frozen=True)
class SloClass:
    slo_ms: float | None
    """Latency target in ms; None: send no slo_ms (the server's default) and judge no lateness."""
    weight: float
    min_accuracy: float | None = None

    def name(self, model: str) -> str:
        """The label of this class in a report, e.g. ``supernet slo=50ms acc>=0.9``."""
        slo = f"slo={self.slo_ms:g}ms" if self.slo_ms is not None else "slo=default"
        return f"{model} {slo}" + (f" acc>={self.min_accuracy:g}" if self.min_accuracy is not None else "")

    def parameters(self, send_slo: bool) -> dict[str, float]:
        """The request parameters of this class (``slo_ms`` only if ``send_slo``)."""
        params: dict[str, float] = {}
        if send_slo and self.slo_ms is not None:
            params["slo_ms"] = float(self.slo_ms)
        if self.min_accuracy is not None:
            params["min_accuracy"] = float(self.min_accuracy)
        return params


def _items(text: str, max_fields: int, grammar: str) -> list[list[str]]:
    items = [s.strip() for s in str(text).split(",")]
    fields = [item.split(":") for item in items if item]
    if not fields:
        raise ValueError(f"no classes in {text!r}; expected {grammar}[,...]")
    for f in fields:
        if len(f) > max_fields:
            raise ValueError(f"class {':'.join(f)!r}: {len(f)} fields; expected {grammar}")
    return fields


def _number(item: list[str], i: int, field: str) -> float:
    try:
        return float(item[i])
    except ValueError:
        raise ValueError(f"class {':'.join(item)!r}: {field} {item[i]!r} is not a number") from None


def _weight(item: list[str]) -> float:
    weight = _number(item, 1, "weight") if len(item) > 1 else 1.0
    if not weight > 0:
        raise ValueError(f"class {':'.join(item)!r}: weight must be > 0")
    return weight


def _floor(item: list[str], i: int) -> float:
    floor = _number(item, i, "min_accuracy")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"class {':'.join(item)!r}: min_accuracy must be in [0, 1]")
    return floor


def parse(text: str, allow_default: bool = True) -> tuple[SloClass, ...]:
    """``"50:0.5,200:0.5:0.9,none:1"`` -> classes of ``slo_ms[:weight[:min_accuracy]]`` (see the module doc).
    ``allow_default=False`` refuses ``none`` (the load generator needs a latency target for every request)."""
    classes = []
    for item in _items(text, 3, "slo_ms[:weight[:min_accuracy]]"):
        if item[0].strip().lower() in DEFAULT_WORDS:
            if not allow_default:
                raise ValueError(f"class {':'.join(item)!r}: slo_ms {item[0]!r}: this command needs a number")
            slo = None
        else:
            slo = _number(item, 0, "slo_ms")
            if not slo > 0:
                raise ValueError(f"class {':'.join(item)!r}: slo_ms must be > 0")
        floor = _floor(item, 2) if len(item) > 2 else None
        classes.append(SloClass(slo, _weight(item), floor))
    return tuple(classes)


def floor_classes(text: str) -> list[tuple[float, float]]:
    """``"0:0.6,0.92:0.4"`` -> [(min_accuracy, probability)]: accuracy floors drawn on their own."""
    out = [(_floor(item, 0), _weight(item)) for item in _items(text, 2, "min_accuracy[:weight]")]
    return normalised(out)


def normalised(pairs: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """[(value, weight)] -> [(value, probability)], the weights scaled to sum to 1."""
    total = sum(w for _, w in pairs)
    return [(v, w / total) for v, w in pairs]
