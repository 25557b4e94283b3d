"""The two data sets of the paper as tensors: Yin-Yang (generated) and MNIST (IDX files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .mnist import load_mnist
from .yinyang import make_yinyang

DATASETS = ("yinyang", "mnist")

# Yin-Yang training set as in the authors' configuration: 3,000 points, seed 42.
# The test set comes from another seed so that no point is shared.
YINYANG_TRAIN_SIZE = 3000
YINYANG_TRAIN_SEED = 42
YINYANG_TEST_SIZE = 2000
YINYANG_TEST_SEED = 43


@dataclass(frozen=True)
class Dataset:
    """Training and held-out test tensors of one classification task.

    ``train_x`` and ``test_x`` are float32 tensors of shape (n_samples, n_features);
    ``train_y`` and ``test_y`` are int64 tensors of shape (n_samples,).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def n_features(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def n_classes(self) -> int:
        return int(max(self.train_y.max(), self.test_y.max())) + 1


def load_dataset(
    name: str, data_dir: Path | None = None, cache_dir: Path | None = None
) -> Dataset:
    """Load ``"yinyang"`` (generated) or ``"mnist"`` (from ``data_dir`` or the cache).

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`DATASETS`.
    """
    if name == "yinyang":
        train_x, train_y = make_yinyang(YINYANG_TRAIN_SIZE, YINYANG_TRAIN_SEED)
        test_x, test_y = make_yinyang(YINYANG_TEST_SIZE, YINYANG_TEST_SEED)
    elif name == "mnist":
        mnist = load_mnist(data_dir=data_dir, cache_dir=cache_dir)
        train_x, train_y = mnist.train_images, mnist.train_labels
        test_x, test_y = mnist.test_images, mnist.test_labels
    else:
        raise ValueError(
            f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}"
        )
    return Dataset(
        name=name,
        train_x=_as_tensor(train_x, torch.float32),
        train_y=_as_tensor(train_y, torch.int64),
        test_x=_as_tensor(test_x, torch.float32),
        test_y=_as_tensor(test_y, torch.int64),
    )


def _as_tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)
