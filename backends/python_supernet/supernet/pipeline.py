"""The whole ``superserve train`` recipe, for any built-in family: train, calibrate the family's
candidate subnets, pick the Pareto set on validation data, report test accuracy, save weights +
metadata. Deterministic given the seed (up to float non-associativity across thread counts)."""
from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from . import calibrate as cal
from .checkpoint import save_checkpoint
from .data import load_split
from .families import DEFAULT_FAMILY, family_class
from .progress import Progress
from .train import TrainConfig, seed_everything, train

log = logging.getLogger(__name__)


# Each family's recipe on 2 CPU cores (``superserve train --family F``; flags override them).
TRAIN_DEFAULTS = {
    "elastic-cnn": TrainConfig(),
    # A transformer needs AdamW; two epochs of the largest alone, then the sandwich rule (~20 min on 2 cores).
    "elastic-vit": TrainConfig(epochs_largest=2, epochs_sandwich=6, lr=2e-3, weight_decay=0.05, optimizer="adamw"),
}
DEFAULT_OUT = {"elastic-cnn": "supernet.pt", "elastic-vit": "vit.pt"}


def train_supernet(out: Path, cfg: TrainConfig, data_dir: str | None, device: str, command: str,
                   family: str = DEFAULT_FAMILY, arch: dict | None = None, calib_images: int = 2000) -> dict:
    started = time.monotonic()
    dev = torch.device(device)
    seed_everything(cfg.seed)
    x_tr, y_tr = load_split("train", data_dir)
    x_val, y_val = load_split("val", data_dir)
    x_te, y_te = load_split("test", data_dir)
    cls = family_class(family)
    model = cls.from_arch(arch) if arch else cls()
    log.info("supernet: %d subnets, %d parameters; training on %d images (%s, %d threads)", model.space.size(),
             sum(p.numel() for p in model.parameters()), len(y_tr), dev, torch.get_num_threads())
    history = train(model, x_tr, y_tr, cfg, dev)
    model.to("cpu")  # calibration, latency ranking and the saved weights are CPU

    cands = model.candidates()
    model.calibrate(cands, x_tr[:calib_images])
    rows = []
    bar = Progress(len(cands), "evaluate (val)")
    for c in cands:
        rows.append({"name": c.name, "val_accuracy": round(cal.accuracy(model, c, x_val, y_val), 4),
                     "latency_ms": round(cal.latency_ms(model, c), 3), "macs": model.macs(c),
                     "params": model.params(c)})
        bar.update(1, c.name)
    front = cal.pareto(rows)
    sp = model.space
    report_names = {p["name"] for p in front} | {sp.largest.name, sp.smallest.name}
    for r in rows:
        r["pareto"] = r["name"] in {p["name"] for p in front}
        if r["name"] in report_names:
            r["test_accuracy"] = round(cal.accuracy(model, sp.parse(r["name"]), x_te, y_te), 4)
    meta = {
        "command": command,
        "train_config": asdict(cfg),
        "device": str(dev),
        "hardware": f"{platform.processor() or platform.machine()} x{os.cpu_count()}",
        "torch": torch.__version__,
        "history": history,
        "seconds": round(time.monotonic() - started, 1),
        "pareto": [p["name"] for p in front],
        "largest": sp.largest.name,
        "smallest": sp.smallest.name,
        "subnets": rows,
    }
    meta = save_checkpoint(model, out, meta)
    log.info("saved %s (sha256 %s) in %.0f s; Pareto set: %d subnets", out, meta["sha256"][:12], meta["seconds"],
             len(front))
    return meta
