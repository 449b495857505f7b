"""The Backbone contract: every registered model keeps it, and a plug-in that breaks it is told
which part is missing."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from seqarena.errors import ConfigError, UserError
from seqarena.models import MODELS, Backbone, Seq2SeqBackbone, StepNotSupported, build_model

BUILT_IN = [name for name in MODELS if MODELS.get(name).build.__module__.startswith("seqarena.")]
FAMILIES = {"recurrent", "scan", "attention", "linear-attention", "ssm", "delta-rule", "xlstm"}


def build(name: str, **fields) -> Backbone:
    try:
        return build_model(name, strict=False, d_model=16, layers=1, **fields)
    except ConfigError:
        raise  # a built-in that cannot be built at this size is a bug, not a missing extra
    except UserError as e:  # an optional extra (Keras) that is not installed
        pytest.skip(str(e))


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_registered_model_keeps_the_contract(name):
    torch.manual_seed(0)
    model = build(name).eval()
    assert isinstance(model, Backbone) and model.family in FAMILIES
    assert isinstance(model.causal, bool) and model.d_model == 16
    x = torch.randn(2, 5, 16)  # (B, L, D)
    with torch.no_grad():
        if model.seq2seq:
            assert isinstance(model, Seq2SeqBackbone) and isinstance(model.encoder, Backbone)
            y = model(x, x)
        else:
            y = model(x)
    assert y.shape == (2, 5, 16)


@pytest.mark.parametrize("name", BUILT_IN)
def test_a_fused_kernel_declares_the_flops_its_readable_reference_is_counted_doing(name):
    """Where the fast path does the reference's work in a kernel the counter cannot see into
    (fused RNNs, scans), what it sees plus what the model declares uncounted equals what it sees
    of the same parameters on the readable path. (Chunked and causal-kernel paths do other work
    than their references, and are counted as they run: see flops.py.)"""
    from seqarena.flops import count_flops, total_flops

    model = build(name).eval()
    reference = model.reference()
    if reference is None or model.seq2seq or model.family not in ("recurrent", "scan"):
        return
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        fast = total_flops(count_flops(lambda: model(x)), model.uncounted_flops(2, 5))
        readable = total_flops(count_flops(lambda: reference(x)), reference.uncounted_flops(2, 5))
    assert fast == readable


@pytest.mark.parametrize("name", BUILT_IN)
def test_reference_has_the_same_parameters_and_the_same_outputs(name):
    torch.manual_seed(0)
    model = build(name).eval()
    reference = model.reference()
    if reference is None:
        return
    assert type(reference) is type(model) and reference.config != model.config
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        args = (x, x) if model.seq2seq else (x,)
        torch.testing.assert_close(reference(*args), model(*args), atol=1e-5, rtol=1e-5)
    for (n, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("name", [n for n in BUILT_IN if n not in ("rnn-ed", "transformer-ed")])
def test_causal_models_step_like_their_forward_and_the_others_refuse(name):
    torch.manual_seed(0)
    model = build(name).eval()
    x = torch.randn(2, 4, 16)
    with torch.no_grad():
        if not model.causal:
            with pytest.raises(StepNotSupported):
                model.step(model.init_state(2), x[:, 0])
            return
        state, ys = model.init_state(2), []
        for t in range(4):
            y_t, state = model.step(state, x[:, t])
            ys.append(y_t)
        torch.testing.assert_close(torch.stack(ys, 1), model(x), atol=1e-5, rtol=1e-5)


BROKEN = textwrap.dedent('''
    import torch
    from torch import nn


    class HalfDecoder(nn.Module):
        causal = True

        def __init__(self, d):
            super().__init__()
            self.proj = nn.Linear(d, d)

        def forward(self, x):
            return self.proj(x)

        def step(self, state, x_t):
            return self.proj(x_t), state


    class Unsure(nn.Module):
        causal = "yes"

        def forward(self, x):
            return x


    def half(config):
        return HalfDecoder(config.d_model)


    def unsure(config):
        return Unsure()
''')


@pytest.mark.parametrize("factory, missing", [("half", "defines step() but not init_state()"),
                                              ("unsure", "causal must be True or False")])
def test_a_plugin_missing_part_of_the_contract_gets_one_line_naming_it(tmp_path, factory, missing):
    (tmp_path / "brokenplug.py").write_text(BROKEN)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    r = subprocess.run([sys.executable, "-m", "seqarena", "train", "--model",
                        f"brokenplug:{factory}", "--task", "adding", "--steps", "2",
                        "--out", str(tmp_path / "runs")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and missing in lines[0] and f"brokenplug:{factory}" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_no_code_outside_models_reads_a_model_attribute_by_getattr():
    import pathlib
    import re

    import seqarena

    root = pathlib.Path(seqarena.__file__).parent
    pattern = re.compile(r"(getattr|hasattr)\((backbone|model|module|self\.module)\b")
    offenders = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py")
                 if "models" not in p.relative_to(root).parts
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def floats_held(state) -> int:
    """Elements of every tensor a decoding state holds (its fields, lists and tuples)."""
    if isinstance(state, torch.Tensor):
        return state.numel()
    if isinstance(state, (list, tuple)):
        return sum(floats_held(s) for s in state)
    if isinstance(state, dict):
        return sum(floats_held(s) for s in state.values())
    return sum(floats_held(s) for s in vars(state).values()) if hasattr(state, "__dict__") else 0


@pytest.mark.parametrize("name", [n for n in BUILT_IN if not n.startswith("keras")])
def test_state_size_is_the_floats_step_carries_per_layer_and_sequence(name):
    model = build(name).eval()
    if model.seq2seq or not model.causal:
        return
    B = 3
    with torch.no_grad():
        state = model.init_state(B)
        for x_t in torch.randn(5, B, 16):
            _, state = model.step(state, x_t)
    if model.family == "attention":  # a KV cache: 2 n D, growing with the tokens read
        assert model.state_size(5) == 2 * 5 * 16 and model.state_size(10) == 2 * 10 * 16
    else:  # a recurrence: what the state holds, the same at every position
        assert floats_held(state) == B * model.state_size(5)
        assert model.state_size(5) == model.state_size(4096)
