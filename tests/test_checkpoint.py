"""Checkpoints: safe to load, atomic to write, refused when they are not ours."""

import random

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from seqarena.training import checkpoint
from seqarena.errors import UserError


def small_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def save_steps(ckpt_dir, model, steps, keep=10):
    for step in steps:
        checkpoint.save(ckpt_dir, step, model, {"note": f"step {step}"}, keep=keep)


def one_line_user_error(call):
    with pytest.raises(UserError) as e:
        call()
    assert "\n" not in str(e.value)
    return str(e.value)


def test_round_trip_restores_weights_and_state_with_weights_only(tmp_path):
    model = small_model()
    ckpt = checkpoint.save(tmp_path, 7, model, {"optimizer": {"lr": torch.tensor(0.5)}}, keep=2)
    raw = torch.load(ckpt.state, weights_only=True)
    assert raw["format"] == checkpoint.FORMAT and raw["step"] == 7
    with safe_open(str(ckpt.weights), "pt") as f:
        assert f.metadata()["format"] == checkpoint.FORMAT
    other = small_model(seed=1)
    checkpoint.load_weights(other, ckpt.weights)
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)
    assert checkpoint.load_state(ckpt.state)["optimizer"]["lr"].item() == 0.5


def test_tied_and_strided_weights_round_trip(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(5, 3)
            self.head = nn.Linear(3, 5, bias=False)
            self.head.weight = self.embed.weight  # tied, as in GPT-2
            self.register_buffer("strided", torch.arange(12.0).view(3, 4).t())  # not contiguous

    model = Tied()
    ckpt = checkpoint.save(tmp_path, 1, model, {}, keep=1)
    other = Tied()
    other.embed.weight.data.zero_()
    other.strided.zero_()
    checkpoint.load_weights(other, ckpt.weights)
    assert torch.equal(other.embed.weight, model.embed.weight)
    assert other.head.weight is other.embed.weight  # still tied after loading
    assert torch.equal(other.strided, model.strided)


def test_only_the_newest_k_checkpoints_are_kept(tmp_path):
    save_steps(tmp_path, small_model(), [10, 20, 30, 40], keep=2)
    assert [c.step for c in checkpoint.list_checkpoints(tmp_path)] == [30, 40]
    assert len(list(tmp_path.iterdir())) == 4


def test_rng_state_round_trip_covers_python_numpy_and_torch(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    checkpoint.save(tmp_path, 1, small_model(), {"rng": checkpoint.rng_state()}, keep=1)
    first = (random.random(), np.random.rand(), np.random.randn(), torch.rand(2).tolist())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    checkpoint.set_rng_state(checkpoint.load_state(checkpoint.latest(tmp_path).state)["rng"])
    assert (random.random(), np.random.rand(), np.random.randn(), torch.rand(2).tolist()) == first


def test_a_crash_in_the_middle_of_saving_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    model = small_model()
    save_steps(tmp_path, model, [10])
    real_save = torch.save

    def half_then_crash(obj, path):
        real_save(obj, path)
        with open(path, "r+b") as f:
            f.truncate(f.seek(0, 2) // 2)
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(tmp_path, 20, model, {"note": "step 20"}, keep=1)
    monkeypatch.undo()

    latest = checkpoint.latest(tmp_path)
    assert latest.step == 10
    assert checkpoint.load_state(latest.state)["note"] == "step 10"
    checkpoint.load_weights(small_model(seed=5), latest.weights)
    assert not list(tmp_path.glob("*.tmp"))  # the half-written temp file is gone


def test_a_crash_while_writing_weights_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model = small_model()
    save_steps(tmp_path, model, [10])

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, 20, model, {}, keep=1)
    assert [c.step for c in checkpoint.list_checkpoints(tmp_path)] == [10]


def test_weights_without_their_state_file_are_not_a_checkpoint(tmp_path):
    """What a kill between the two renames leaves behind is ignored."""
    model = small_model()
    save_steps(tmp_path, model, [10, 20])
    (tmp_path / "step-00000020.state.pt").unlink()
    (tmp_path / ".step-00000030.state.pt.abc.tmp").write_bytes(b"partial")
    assert checkpoint.latest(tmp_path).step == 10


def test_truncated_state_file_is_a_clear_error(tmp_path):
    ckpt = checkpoint.save(tmp_path, 1, small_model(), {"x": torch.zeros(1000)}, keep=1)
    data = ckpt.state.read_bytes()
    ckpt.state.write_bytes(data[: len(data) // 2])
    message = one_line_user_error(lambda: checkpoint.load_state(ckpt.state))
    assert "not a readable seqarena checkpoint" in message


def test_truncated_weights_file_is_a_clear_error(tmp_path):
    ckpt = checkpoint.save(tmp_path, 1, small_model(), {}, keep=1)
    data = ckpt.weights.read_bytes()
    ckpt.weights.write_bytes(data[: len(data) - 10])
    message = one_line_user_error(lambda: checkpoint.load_weights(small_model(), ckpt.weights))
    assert "cannot load these weights" in message


def test_weights_of_another_model_are_a_clear_error(tmp_path):
    ckpt = checkpoint.save(tmp_path, 1, small_model(), {}, keep=1)
    message = one_line_user_error(lambda: checkpoint.load_weights(nn.Linear(3, 4), ckpt.weights))
    assert "cannot load these weights" in message


@pytest.mark.parametrize("content", [
    lambda path: torch.save({"step": 3, "weights": torch.zeros(2)}, path),  # torch, but not ours
    lambda path: path.write_text("hello, I am a text file\n"),
    lambda path: path.write_bytes(np.random.default_rng(0).bytes(300)),
])
def test_a_file_that_is_not_ours_is_a_clear_error(tmp_path, content):
    path = tmp_path / "step-00000001.state.pt"
    content(path)
    message = one_line_user_error(lambda: checkpoint.load_state(path))
    assert str(path) in message and "seqarena checkpoint" in message


class Exploit:
    """Unpickling this would create a file: what a hostile checkpoint does to run code."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_checkpoint_carrying_a_pickled_object_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "step-00000001.state.pt"
    torch.save({"format": checkpoint.FORMAT, "version": 1, "step": 1,
                "payload": Exploit(str(marker))}, path)
    message = one_line_user_error(lambda: checkpoint.load_state(path))
    assert "refused: it carries a pickled Python object" in message
    assert not marker.exists()


def test_a_checkpoint_from_a_newer_format_is_refused(tmp_path):
    path = tmp_path / "step-00000001.state.pt"
    torch.save({"format": checkpoint.FORMAT, "version": checkpoint.VERSION + 1, "step": 1}, path)
    assert "upgrade seqarena" in one_line_user_error(lambda: checkpoint.load_state(path))
