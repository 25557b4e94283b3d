"""Tests of the MLP, its training loop, accuracy and safetensors files."""

from __future__ import annotations

import json
import logging
import math
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from koopman_hybrid.mlp import (
    METADATA_KEY,
    MLP,
    WIDTHS_KEY,
    TrainConfig,
    accuracy,
    as_mlp,
    check_hidden_layer,
    check_inputs,
    layer_inputs_and_outputs,
    load_mlp,
    logits_constant,
    restart_seed,
    save_mlp,
    train_classifier,
)

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "koopman_hybrid"


def make_blobs(n_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two Gaussian blobs (std 0.4) around (-1, -1) and (1, 1), classes alternating."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_samples) % 2
    centres = (2.0 * labels.float() - 1.0).unsqueeze(1).expand(-1, 2)
    points = centres + 0.4 * torch.randn(n_samples, 2, generator=generator)
    return points, labels


FAST = TrainConfig(epochs=30, batch_size=50, lr=1e-2, weight_decay=1e-4, seed=0)


@pytest.fixture(scope="module")
def trained():
    train_x, train_y = make_blobs(400, seed=0)
    model, log = train_classifier((2, 8, 6, 2), train_x, train_y, FAST, progress=False)
    return model, log


def first_dead_seed(widths, x):
    """Seed whose initial network outputs zeros in layer 0 for every row of x, while
    the network of its first restart seed (seed + 1000) does not."""

    def dead(seed):
        model = MLP(widths, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return bool((model.run_layers(x, 0, 1) == 0).all())

    for seed in range(100):
        if dead(seed) and not dead(seed + 1000):
            return seed
    raise AssertionError("no dead initial network among seeds 0..99")


# MLP structure


def test_mlp_layer_shapes():
    model = MLP((3, 5, 4, 2))
    shapes = [tuple(layer.weight.shape) for layer in model.layers]
    assert shapes == [(5, 3), (4, 5), (2, 4)]


def test_mlp_counts_layers():
    model = MLP((3, 5, 4, 2))
    assert model.n_layers == 3
    assert list(model.hidden_layers) == [1]


def test_mlp_forward_applies_relu_except_last():
    model = MLP((3, 5, 4, 2), generator=torch.Generator().manual_seed(1))
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(2))
    w = [layer.weight for layer in model.layers]
    b = [layer.bias for layer in model.layers]
    hidden = torch.clamp(x @ w[0].T + b[0], min=0)
    hidden = torch.clamp(hidden @ w[1].T + b[1], min=0)
    expected = hidden @ w[2].T + b[2]
    # Same operations in the same order in float32: equal up to summation order.
    torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-6)


def test_run_layers_composes_to_forward():
    model = MLP((3, 5, 4, 2), generator=torch.Generator().manual_seed(1))
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(2))
    middle = model.run_layers(x, 0, 2)
    assert torch.equal(model.run_layers(middle, 2, 3), model(x))


def test_run_layers_empty_range_returns_input():
    model = MLP((3, 5, 2))
    x = torch.randn(4, 5)
    assert model.run_layers(x, 1, 1) is x


@pytest.mark.parametrize("start, stop", [(-1, 1), (2, 1), (0, 4)])
def test_run_layers_rejects_bad_range(start, stop):
    model = MLP((3, 5, 4, 2))
    with pytest.raises(ValueError, match="invalid layer range"):
        model.run_layers(torch.zeros(1, 3), start, stop)


def test_mlp_generator_makes_init_repeatable():
    first = MLP((3, 5, 2), generator=torch.Generator().manual_seed(7))
    second = MLP((3, 5, 2), generator=torch.Generator().manual_seed(7))
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name])


def test_mlp_init_within_default_bounds():
    model = MLP((16, 4, 2), generator=torch.Generator().manual_seed(0))
    # nn.Linear's default draws from U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    assert float(model.layers[0].weight.detach().abs().max()) <= 1 / math.sqrt(16)


@pytest.mark.parametrize(
    "widths, error",
    [
        ((3,), ValueError),
        ((3, 0, 2), ValueError),
        ((3.0, 2), TypeError),
        ("32", TypeError),
        ((3, True), TypeError),
    ],
)
def test_mlp_rejects_bad_widths(widths, error):
    with pytest.raises(error):
        MLP(widths)


# as_mlp


def test_as_mlp_returns_mlp_unchanged():
    model = MLP((3, 4, 2))
    assert as_mlp(model) is model


def test_as_mlp_wraps_sequential_with_same_output():
    torch.manual_seed(0)
    sequential = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    x = torch.randn(6, 3)
    model = as_mlp(sequential)
    assert model.widths == (3, 5, 2)
    assert torch.equal(model(x), sequential(x))


def test_as_mlp_shares_linear_modules():
    sequential = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    model = as_mlp(sequential)
    assert model.layers[0] is sequential[0]


def test_as_mlp_rejects_other_module_type():
    with pytest.raises(TypeError, match="cannot use a Linear as an MLP"):
        as_mlp(nn.Linear(3, 2))


def test_as_mlp_rejects_unsupported_submodule():
    sequential = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    with pytest.raises(TypeError, match="submodule 1 is a Tanh"):
        as_mlp(sequential)


@pytest.mark.parametrize(
    "layer, name",
    [
        (nn.Conv1d(5, 5, kernel_size=1), "Conv1d"),
        (nn.LeakyReLU(), "LeakyReLU"),
        (nn.Sequential(nn.ReLU()), "Sequential"),
    ],
)
def test_as_mlp_rejects_other_layer_types(layer, name):
    sequential = nn.Sequential(nn.Linear(3, 5), layer, nn.Linear(5, 2))
    with pytest.raises(TypeError, match=f"submodule 1 is a {name}"):
        as_mlp(sequential)


def test_as_mlp_rejects_custom_module():
    class TwoLayers(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = nn.Linear(3, 5)
            self.out = nn.Linear(5, 2)

        def forward(self, x):
            return self.out(torch.relu(self.hidden(x)))

    with pytest.raises(TypeError, match="cannot use a TwoLayers as an MLP"):
        as_mlp(TwoLayers())


def test_as_mlp_rejects_trailing_relu():
    sequential = nn.Sequential(nn.Linear(3, 5), nn.ReLU())
    with pytest.raises(ValueError, match="last submodule 1 is a ReLU"):
        as_mlp(sequential)


def test_as_mlp_rejects_two_linears_in_a_row():
    sequential = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2))
    with pytest.raises(ValueError, match="submodule 1 is a Linear where a ReLU"):
        as_mlp(sequential)


def test_as_mlp_rejects_width_mismatch():
    sequential = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="submodule 2 takes 4 features"):
        as_mlp(sequential)


def test_as_mlp_rejects_linear_without_bias():
    sequential = nn.Sequential(nn.Linear(3, 2, bias=False))
    with pytest.raises(ValueError, match="without bias"):
        as_mlp(sequential)


def test_as_mlp_rejects_empty_sequential():
    with pytest.raises(ValueError, match="empty"):
        as_mlp(nn.Sequential())


# check_hidden_layer


def test_check_hidden_layer_accepts_hidden_layers():
    model = MLP((2, 8, 6, 4, 3, 2))
    assert [check_hidden_layer(model, layer) for layer in (1, 2, 3)] == [1, 2, 3]


@pytest.mark.parametrize(
    "layer, reason",
    [
        (0, "input layer"),
        (4, "output layer"),
        (5, "out of range"),
        (-1, "out of range"),
        (1.0, "must be an int"),
        (True, "must be an int"),
    ],
)
def test_check_hidden_layer_rejects(layer, reason):
    model = MLP((2, 8, 6, 4, 3, 2))
    with pytest.raises(ValueError, match=reason) as info:
        check_hidden_layer(model, layer)
    assert "1..3" in str(info.value)


def test_check_hidden_layer_rejects_network_without_hidden_layer():
    with pytest.raises(ValueError, match="no hidden layer"):
        check_hidden_layer(MLP((2, 4, 2)), 1)


# check_inputs


def test_check_inputs_accepts_batch():
    check_inputs(torch.zeros(4, 3), 3, "inputs", device=torch.device("cpu"))


@pytest.mark.parametrize(
    "x, error, message",
    [
        ([[0.0, 1.0, 2.0]], TypeError, "inputs must be a torch tensor, got list"),
        (torch.zeros(4, 2), ValueError, r"shape \(n_samples, 3\).*got \(4, 2\)"),
        (torch.zeros(0, 3), ValueError, r"n_samples >= 1, got \(0, 3\)"),
        (torch.zeros(3), ValueError, r"got \(3,\)"),
        (torch.zeros(4, 3, dtype=torch.int64), TypeError, "floating point"),
    ],
)
def test_check_inputs_rejects(x, error, message):
    with pytest.raises(error, match=message):
        check_inputs(x, 3, "inputs")


def test_check_inputs_rejects_other_device():
    with pytest.raises(ValueError, match="inputs is on meta but the network on cpu"):
        check_inputs(torch.zeros(4, 3, device="meta"), 3, "inputs", torch.device("cpu"))


# TrainConfig


@pytest.mark.parametrize(
    "changes",
    [
        {"epochs": 0},
        {"batch_size": 0},
        {"lr": 0.0},
        {"weight_decay": -1.0},
        {"betas": (0.9, 1.0)},
        {"plateau_factor": 1.0},
        {"target_accuracy": 0.0},
        {"chance_margin": 1.0},
        {"max_restarts": -1},
    ],
)
def test_train_config_rejects_bad_values(changes):
    with pytest.raises(ValueError):
        TrainConfig(**changes)


def test_train_config_rejects_float_epochs():
    with pytest.raises(TypeError, match="epochs must be an int"):
        TrainConfig(epochs=10.0)


# train_classifier


def test_train_classifier_learns_blobs(trained):
    model, _ = trained
    test_x, test_y = make_blobs(1000, seed=1)
    # The blobs are 2.8 standard deviations apart along the diagonal in each
    # coordinate, so the Bayes error is far below 5 %.
    assert accuracy(model, test_x, test_y) >= 0.95


def test_train_classifier_log_per_epoch(trained):
    _, log = trained
    assert len(log.losses) == FAST.epochs
    assert len(log.train_accuracies) == FAST.epochs
    assert log.epochs_run == FAST.epochs


def test_train_classifier_log_seeds(trained):
    _, log = trained
    assert log.seeds_tried == [0]


def test_train_classifier_loss_decreases(trained):
    _, log = trained
    assert log.final_loss < log.losses[0]


def test_train_classifier_returns_eval_mode(trained):
    model, _ = trained
    assert not model.training


def test_train_classifier_repeats_with_same_seed(trained):
    model, _ = trained
    train_x, train_y = make_blobs(400, seed=0)
    again, _ = train_classifier((2, 8, 6, 2), train_x, train_y, FAST, progress=False)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name


def test_train_classifier_records_validation_sparsely():
    train_x, train_y = make_blobs(200, seed=0)
    val_x, val_y = make_blobs(100, seed=2)
    config = TrainConfig(epochs=25, batch_size=50, lr=1e-2, seed=0, eval_every=10)
    _, log = train_classifier(
        (2, 8, 2), train_x, train_y, config, val_x, val_y, progress=False
    )
    assert log.val_epochs == [10, 20, 25]
    assert len(log.val_accuracies) == 3


def test_train_classifier_stops_at_target_accuracy():
    train_x, train_y = make_blobs(400, seed=0)
    config = TrainConfig(
        epochs=200, batch_size=50, lr=1e-2, seed=0, target_accuracy=0.9
    )
    _, log = train_classifier((2, 8, 2), train_x, train_y, config, progress=False)
    assert log.stopped_early
    assert log.epochs_run < 200
    assert log.train_accuracies[-1] >= 0.9


def test_train_classifier_plateau_scheduler_runs():
    train_x, train_y = make_blobs(200, seed=0)
    config = TrainConfig(
        epochs=20, batch_size=50, lr=1e-2, seed=0, plateau=True, plateau_patience=0
    )
    _, log = train_classifier((2, 8, 2), train_x, train_y, config, progress=False)
    assert len(log.losses) == 20


def test_train_classifier_restarts_dead_network(caplog):
    # The points lie far from the origin, so one hidden unit is off for all of them
    # with probability about 1/2 at initialisation. Such a network never recovers.
    train_x, train_y = make_blobs(200, seed=0)
    train_x = 0.5 * train_x + 5.0
    widths = (2, 1, 2)
    seed = first_dead_seed(widths, train_x)
    config = TrainConfig(
        epochs=40, batch_size=50, lr=3e-2, seed=seed, dead_check_every=5, max_restarts=5
    )
    with caplog.at_level(logging.WARNING, logger="koopman_hybrid.mlp"):
        _, log = train_classifier(widths, train_x, train_y, config, progress=False)
    assert log.seeds_tried[:2] == [seed, seed + 1000]
    assert f"seed {seed} is dead" in caplog.text
    assert f"Restart 1 of 5 trains with seed {seed + 1000}" in caplog.text
    # The dead network is caught at the first check, not only after all 40 epochs.
    assert "its logits were constant after epoch 5" in caplog.text


def test_restart_seed_steps_by_1000():
    assert [restart_seed(7, restart) for restart in range(4)] == [7, 1007, 2007, 3007]


def test_restart_seeds_avoid_next_candidates():
    # Best-of-K training starts candidates at seeds 0..K-1. The restarts of one
    # candidate must not train the first network of another.
    candidates = range(10)
    restarts = {restart_seed(seed, r) for seed in candidates for r in range(1, 4)}
    assert restarts.isdisjoint(candidates)


def test_train_classifier_fails_after_max_restarts():
    train_x, train_y = make_blobs(200, seed=0)
    train_x = 0.5 * train_x + 5.0
    widths = (2, 1, 2)
    seed = first_dead_seed(widths, train_x)
    config = TrainConfig(
        epochs=10, batch_size=50, lr=1e-2, seed=seed, max_restarts=0, dead_check_every=5
    )
    with pytest.raises(RuntimeError, match=rf"seeds \[{seed}\] were dead"):
        train_classifier(widths, train_x, train_y, config, progress=False)


def test_train_classifier_treats_chance_accuracy_as_dead():
    # Labels drawn independently of the inputs cannot be learned in 5 epochs. With a
    # margin of 0.3, every accuracy up to 0.8 counts as chance level.
    generator = torch.Generator().manual_seed(3)
    train_x = torch.randn(400, 2, generator=generator)
    train_y = torch.randperm(400, generator=generator) % 2
    config = TrainConfig(
        epochs=5, batch_size=50, lr=1e-3, seed=0, max_restarts=0, chance_margin=0.3
    )
    with pytest.raises(RuntimeError, match="chance level"):
        train_classifier((2, 4, 2), train_x, train_y, config, progress=False)


def test_train_classifier_rejects_wrong_input_width():
    train_x, train_y = make_blobs(20, seed=0)
    with pytest.raises(ValueError, match=r"shape \(n_samples, 3\)"):
        train_classifier((3, 4, 2), train_x, train_y, FAST, progress=False)


def test_train_classifier_rejects_label_out_of_range():
    train_x, train_y = make_blobs(20, seed=0)
    train_y[0] = 2
    with pytest.raises(ValueError, match="labels 0..1"):
        train_classifier((2, 4, 2), train_x, train_y, FAST, progress=False)


def test_train_classifier_rejects_single_class():
    train_x, _ = make_blobs(20, seed=0)
    train_y = torch.zeros(20, dtype=torch.int64)
    with pytest.raises(ValueError, match="single class"):
        train_classifier((2, 4, 2), train_x, train_y, FAST, progress=False)


def test_train_classifier_rejects_val_x_without_val_y():
    train_x, train_y = make_blobs(20, seed=0)
    with pytest.raises(ValueError, match="both val_x and val_y"):
        train_classifier((2, 4, 2), train_x, train_y, FAST, train_x, progress=False)


# logits_constant


def test_logits_constant_for_dead_network():
    model = MLP((2, 3, 2))
    with torch.no_grad():
        model.layers[0].bias.fill_(-1.0)
        model.layers[0].weight.zero_()
    assert logits_constant(model, torch.randn(5, 2))


def test_logits_constant_false_for_live_network():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert not logits_constant(identity_classifier(), x)


def test_logits_constant_false_for_one_row():
    model = MLP((2, 3, 2))
    with torch.no_grad():
        model.layers[0].weight.zero_()
    assert not logits_constant(model, torch.randn(1, 2))


# accuracy


def identity_classifier() -> MLP:
    """One Linear layer with identity weight: it predicts the larger coordinate."""
    model = MLP((2, 2))
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.eye(2))
        model.layers[0].bias.zero_()
    return model


def test_accuracy_counts_correct_predictions():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [1.0, 3.0]])
    y = torch.tensor([0, 1, 1, 0])
    assert accuracy(identity_classifier(), x, y) == 0.5


def test_accuracy_same_for_small_batches():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [1.0, 3.0], [5.0, 4.0]])
    y = torch.tensor([0, 1, 1, 0, 0])
    assert accuracy(identity_classifier(), x, y, batch_size=2) == 3 / 5


def test_accuracy_restores_training_mode():
    model = identity_classifier().train()
    accuracy(model, torch.ones(2, 2), torch.zeros(2, dtype=torch.int64))
    assert model.training


def test_accuracy_rejects_label_count_mismatch():
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        accuracy(identity_classifier(), torch.ones(3, 2), torch.zeros(2))


# save_mlp and load_mlp


def test_save_load_round_trip_weights(tmp_path):
    model = MLP((3, 5, 2), generator=torch.Generator().manual_seed(0))
    save_mlp(tmp_path / "net.safetensors", model, {"seed": 4})
    loaded, _ = load_mlp(tmp_path / "net.safetensors")
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_save_load_round_trip_metadata(tmp_path):
    metadata = {"dataset": "blobs", "seed": 4, "accuracy": 0.975, "widths": [3, 5, 2]}
    save_mlp(tmp_path / "net.safetensors", MLP((3, 5, 2)), metadata)
    _, loaded = load_mlp(tmp_path / "net.safetensors")
    assert loaded == metadata


def test_load_mlp_returns_widths(tmp_path):
    save_mlp(tmp_path / "net.safetensors", MLP((3, 5, 2)), {})
    loaded, _ = load_mlp(tmp_path / "net.safetensors", expected_widths=(3, 5, 2))
    assert loaded.widths == (3, 5, 2)


def test_save_mlp_leaves_only_target(tmp_path):
    save_mlp(tmp_path / "out" / "net.safetensors", MLP((3, 5, 2)), {})
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["net.safetensors"]


def test_save_mlp_accepts_sequential(tmp_path):
    sequential = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    save_mlp(tmp_path / "net.safetensors", sequential, {})
    loaded, _ = load_mlp(tmp_path / "net.safetensors")
    assert torch.equal(loaded.layers[1].weight, sequential[2].weight)


def test_save_mlp_rejects_unserialisable_metadata(tmp_path):
    with pytest.raises(TypeError, match="JSON-serialisable"):
        save_mlp(tmp_path / "net.safetensors", MLP((3, 2)), {"x": object()})


def test_load_mlp_rejects_other_widths(tmp_path):
    save_mlp(tmp_path / "net.safetensors", MLP((3, 5, 2)), {})
    with pytest.raises(ValueError, match=r"widths \[3, 5, 2\].*\[3, 6, 2\]"):
        load_mlp(tmp_path / "net.safetensors", expected_widths=(3, 6, 2))


def test_load_mlp_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_mlp(tmp_path / "missing.safetensors")


def test_load_mlp_rejects_non_safetensors_file(tmp_path):
    path = tmp_path / "net.safetensors"
    path.write_bytes(b"this is plain text and no safetensors header at all")
    with pytest.raises(ValueError, match="not a safetensors file") as info:
        load_mlp(path)
    assert str(path) in str(info.value)


class WritesMarker:
    """Unpickling this object creates the file ``marker`` (it calls ``open``)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_load_mlp_never_unpickles(tmp_path):
    payload = pickle.dumps(WritesMarker(tmp_path / "unpickled"))
    # Control: unpickling the payload does create its marker file.
    pickle.loads(pickle.dumps(WritesMarker(tmp_path / "control"))).close()
    assert (tmp_path / "control").exists()

    path = tmp_path / "net.safetensors"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_mlp(path)
    assert not (tmp_path / "unpickled").exists()


def test_load_mlp_never_unpickles_torch_checkpoint(tmp_path):
    path = tmp_path / "net.pt"
    torch.save({"weights": WritesMarker(tmp_path / "unpickled")}, path)
    with pytest.raises(ValueError, match="PyTorch checkpoint") as info:
        load_mlp(path)
    assert "save_mlp" in str(info.value)
    assert not (tmp_path / "unpickled").exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 3, bytes(range(256)) * 16])
def test_load_mlp_rejects_bytes_that_are_not_safetensors(tmp_path, content):
    path = tmp_path / "net.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a safetensors file") as info:
        load_mlp(path)
    assert "Give a file written by save_mlp" in str(info.value)


def test_package_source_never_unpickles():
    # Loading code must read safetensors or JSON only, so no module may call an
    # unpickling loader.
    forbidden = ("torch.load(", "pickle.load", "allow_pickle=True", "import pickle")
    for module in sorted(PACKAGE_DIR.glob("*.py")):
        text = module.read_text()
        for call in forbidden:
            assert call not in text, f"{module.name} contains {call}"


def test_load_mlp_rejects_file_without_widths(tmp_path):
    path = tmp_path / "net.safetensors"
    save_file(MLP((3, 2)).state_dict(), str(path))
    with pytest.raises(ValueError, match="no 'koopman_hybrid.widths'"):
        load_mlp(path)


def test_load_mlp_rejects_missing_tensor(tmp_path):
    path = tmp_path / "net.safetensors"
    tensors = dict(MLP((3, 5, 2)).state_dict())
    del tensors["layers.1.bias"]
    save_file(tensors, str(path), metadata={WIDTHS_KEY: json.dumps([3, 5, 2])})
    with pytest.raises(ValueError, match=r"lacks tensors \['layers.1.bias'\]"):
        load_mlp(path)


def test_load_mlp_rejects_extra_tensor(tmp_path):
    path = tmp_path / "net.safetensors"
    tensors = dict(MLP((3, 5, 2)).state_dict())
    tensors["layers.2.weight"] = torch.zeros(2, 2)
    save_file(tensors, str(path), metadata={WIDTHS_KEY: json.dumps([3, 5, 2])})
    with pytest.raises(ValueError, match=r"has tensors \['layers.2.weight'\]"):
        load_mlp(path)


def test_load_mlp_rejects_wrong_tensor_shape(tmp_path):
    path = tmp_path / "net.safetensors"
    tensors = dict(MLP((3, 5, 2)).state_dict())
    tensors["layers.0.weight"] = torch.zeros(5, 4)
    save_file(tensors, str(path), metadata={WIDTHS_KEY: json.dumps([3, 5, 2])})
    with pytest.raises(ValueError, match=r"layers.0.weight has shape \(5, 4\)"):
        load_mlp(path)


def test_load_mlp_rejects_invalid_metadata_json(tmp_path):
    path = tmp_path / "net.safetensors"
    header = {WIDTHS_KEY: json.dumps([3, 2]), METADATA_KEY: "{not json"}
    save_file(dict(MLP((3, 2)).state_dict()), str(path), metadata=header)
    with pytest.raises(ValueError, match="metadata entry is not JSON"):
        load_mlp(path)


def test_layer_inputs_and_outputs_across_batches():
    # More rows than one forward batch, so the pieces must be joined in order.
    model = MLP((3, 5, 4, 2), generator=torch.Generator().manual_seed(0))
    model.train()
    x = torch.randn(9000, 3, generator=torch.Generator().manual_seed(1))

    inputs, outputs = layer_inputs_and_outputs(model, x, 1)

    with torch.no_grad():
        expected_inputs = torch.relu(model.layers[0](x))
        expected_outputs = torch.relu(model.layers[1](expected_inputs))
    # Float32 matrix products of other batch sizes may sum in another order, so the
    # results agree to round-off, not bit for bit.
    torch.testing.assert_close(inputs, expected_inputs, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(outputs, expected_outputs, rtol=1e-6, atol=1e-6)
    assert model.training
