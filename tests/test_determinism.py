"""Same seed, same numbers on CPU: the whole pipeline, and training with validation."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch
from safetensors import safe_open

from koopman_hybrid.experiment import run_reproduction
from koopman_hybrid.mlp import TrainConfig, train_classifier
from koopman_hybrid.presets import default_config


def tiny_config():
    """Yin-Yang with two seed candidates, 10 epochs and one small hybrid."""
    config = default_config("yinyang")
    return dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, epochs=10, lr=3e-2),
        scaling=dataclasses.replace(config.scaling, n_inserted=5, epochs=2),
        layers=(1,),
        delays=(1,),
        trajectories=(50,),
        seed_candidates=2,
    )


@pytest.fixture
def global_seed():
    """Seed the global generators of torch, numpy and random, restoring them after.

    The pipeline must draw every random number from its own seeded generators, so
    runs after different global seeds must agree.
    """
    numpy_state = np.random.get_state()
    random_state = random.getstate()
    with torch.random.fork_rng(devices=[]):

        def seed_all(seed: int) -> None:
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)

        yield seed_all
    np.random.set_state(numpy_state)
    random.setstate(random_state)


def test_pipeline_repeats_results_in_fresh_folders(tmp_path, global_seed):
    folders = [tmp_path / "first", tmp_path / "second"]
    for seed, folder in zip((1, 2), folders):
        global_seed(seed)
        run_reproduction(tiny_config(), folder)

    first, second = (json.loads((f / "results.json").read_text()) for f in folders)
    # Wall times differ from run to run. Every other number must be identical.
    first.pop("seconds")
    second.pop("seconds")
    assert first == second
    for name in ("model.safetensors", "scaled_layer1.safetensors"):
        first_metadata, first_tensors = read_safetensors(folders[0] / name)
        second_metadata, second_tensors = read_safetensors(folders[1] / name)
        assert first_metadata == second_metadata
        assert first_tensors.keys() == second_tensors.keys()
        for key, tensor in first_tensors.items():
            assert torch.equal(second_tensors[key], tensor), f"{name}: {key}"


def read_safetensors(path):
    # The header's key order can differ between two writes of the same content, so
    # the files are compared by what they contain, not byte by byte.
    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        return handle.metadata(), tensors


def blobs(n_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two Gaussian blobs (std 0.4) around (-1, -1) and (1, 1), classes alternating."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_samples) % 2
    centres = (2.0 * labels.float() - 1.0).unsqueeze(1).expand(-1, 2)
    return centres + 0.4 * torch.randn(n_samples, 2, generator=generator), labels


def test_validation_leaves_training_unchanged():
    # Validation after every epoch, with the plateau scheduler on, gives the same
    # weights and losses as training without validation data.
    train_x, train_y = blobs(400, seed=0)
    val_x, val_y = blobs(100, seed=2)
    config = TrainConfig(
        epochs=12, batch_size=50, lr=1e-2, seed=0, plateau=True, eval_every=1
    )
    plain, plain_log = train_classifier(
        (2, 8, 6, 2), train_x, train_y, config, progress=False
    )
    with_val, val_log = train_classifier(
        (2, 8, 6, 2), train_x, train_y, config, val_x, val_y, progress=False
    )

    assert val_log.val_epochs == list(range(1, 13))
    assert val_log.losses == plain_log.losses
    for name, tensor in plain.state_dict().items():
        assert torch.equal(with_val.state_dict()[name], tensor), name
