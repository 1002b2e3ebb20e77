"""Fashion-MNIST from the original IDX .gz files, read with numpy (no network, no torchvision).

Debian's package ``dataset-fashion-mnist`` installs them under /usr/share/datasets/fashion-mnist/.
The 60k training images are split once, by a fixed seed, into train (55k) and validation (5k);
validation is never trained on (subnet selection and cascade planning use it) and the 10k test
split is only used for the reported accuracy.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
VALIDATION_SIZE = 5000
SPLIT_SEED = 20251123
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class DatasetMissing(FileNotFoundError):
    pass


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    d = Path(explicit or os.environ.get("SUPERSERVE_DATA_DIR") or DEFAULT_DATA_DIR)
    missing = [f for pair in FILES.values() for f in pair if not (d / f).exists()]
    if missing:
        raise DatasetMissing(
            f"Fashion-MNIST files {missing} not found in {d}. Install Debian's package "
            "'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist) or pass --data-dir "
            "pointing at a folder holding the original IDX .gz files.")
    return d


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(split: str, directory: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 [N, 1, 28, 28] in [0, 1] and labels as int64 [N].

    ``split`` is one of train (55k), val (5k held out of the official training set), test (10k).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, not {split!r}")
    d = data_dir(directory)
    img_f, lab_f = FILES["test" if split == "test" else "train"]
    images = _read_idx(d / img_f).astype(np.float32)[:, None] / 255.0
    labels = _read_idx(d / lab_f).astype(np.int64)
    if split != "test":
        order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
        idx = order[:VALIDATION_SIZE] if split == "val" else order[VALIDATION_SIZE:]
        images, labels = images[idx], labels[idx]
    return np.ascontiguousarray(images), labels
