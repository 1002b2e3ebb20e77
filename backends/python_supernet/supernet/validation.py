"""Recorded validation behaviour: per Pareto subnet, its prediction and confidence on every image
of the validation split (held out of training; never the test split the accuracy table reports).

The cascade planner (scheduler/offline/planner.py) and the simulator replay these records instead of
running the network, so a cascade's accuracy and escalation rates are estimated on data the
reported numbers are not scored on. Written by ``superserve record-val`` as one .npz beside the
profiles, keyed by the weights' sha256.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .confidence import confidence


@dataclass(frozen=True)
class ValidationRecord:
    supernet: str
    """sha256 of the weights the records were made with."""
    subnets: tuple[str, ...]
    labels: np.ndarray
    """int64 [N]."""
    predictions: np.ndarray
    """int16 [subnets, N]: argmax class per image."""
    max_softmax: np.ndarray
    """float32 [subnets, N]."""
    margin: np.ndarray
    """float32 [subnets, N]: top-1 minus top-2 probability."""
    command: str = ""
    split: str = "val"

    def index(self, subnet: str) -> int:
        try:
            return self.subnets.index(subnet)
        except ValueError:
            raise KeyError(f"subnet {subnet!r} has no validation record "
                           f"(recorded: {', '.join(self.subnets)})") from None

    def correct(self, subnet: str) -> np.ndarray:
        return self.predictions[self.index(subnet)] == self.labels

    def confidence(self, subnet: str, measure: str = "max_softmax") -> np.ndarray:
        if measure not in ("max_softmax", "margin"):
            raise ValueError(f"confidence measure must be max_softmax or margin, not {measure!r}")
        return getattr(self, measure)[self.index(subnet)]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"supernet": self.supernet, "subnets": list(self.subnets), "command": self.command,
                "split": self.split, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        np.savez_compressed(path, meta=np.array(json.dumps(meta)), labels=self.labels, predictions=self.predictions,
                            max_softmax=self.max_softmax, margin=self.margin)
        return path

    @classmethod
    def load(cls, path: str | Path, expect_supernet: str | None = None) -> "ValidationRecord":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no validation record at {path}; make one with 'superserve record-val'")
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            rec = cls(meta["supernet"], tuple(meta["subnets"]), z["labels"], z["predictions"], z["max_softmax"],
                      z["margin"], meta.get("command", ""), meta.get("split", "val"))
        if expect_supernet and rec.supernet != expect_supernet:
            raise ValueError(f"validation record {path} was made with weights {rec.supernet[:12]}, not "
                             f"{expect_supernet[:12]}; re-run 'superserve record-val'")
        return rec


def default_path(root: Path, sha256: str, split: str = "val") -> Path:
    return root / "profiles" / f"{'validation' if split == 'val' else split}-{sha256[:12]}.npz"


def record(weights_path: str | Path, data_dir=None, subnets: list[str] | None = None, command: str = "",
           device: str = "cpu", split: str = "val") -> ValidationRecord:
    """Run every (Pareto) subnet over the validation split (or, for reporting only, the test
    split), with progress output."""
    from .calibrate import predict
    from .checkpoint import load_checkpoint
    from .data import load_split
    from .progress import Progress

    model, meta = load_checkpoint(weights_path, device=device)
    names = list(subnets or meta["pareto"])
    images, labels = load_split(split, data_dir)
    preds, conf, margin = [], [], []
    bar = Progress(len(names), f"record {split}")
    for name in names:
        logits = predict(model, model.space.parse(name), images, device=device).numpy()
        c, m = confidence(logits)
        preds.append(logits.argmax(1).astype(np.int16))
        conf.append(c.astype(np.float32))
        margin.append(m.astype(np.float32))
        bar.update(1, f"{name} acc {float((preds[-1] == labels).mean()):.4f}")
    return ValidationRecord(meta["sha256"], tuple(names), labels.astype(np.int64), np.stack(preds), np.stack(conf),
                            np.stack(margin), command, split)
