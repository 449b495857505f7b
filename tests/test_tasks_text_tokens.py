"""text-lm on the shared tokenizers: BPE windows, bits per character, the run directory's copy."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_tasks_backbones import TinyGRU

from seqarena.config import TrainConfig
from seqarena.training.inference import generate
from seqarena.tasks import make_task
from seqarena.tasks import tokenizer as tok
from seqarena.training.train import train

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def write_text(path, n=6000, seed=0):
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "naïve", "café", "✓"]
    path.write_text(" ".join(rng.choice(words, n // 4)) + "\n", encoding="utf-8")
    return path


def test_bpe_counts_each_character_once_in_the_token_holding_its_first_byte(tmp_path):
    text = write_text(tmp_path / "t.txt").read_text(encoding="utf-8")
    bpe = tok.train_tokenizer("bpe", [text], 300)
    ids = bpe.encode(text)
    assert bpe.chars_per_token()[ids].sum().item() == len(text)
    assert bpe.chars_per_token()[[tok.PAD, tok.UNK, tok.BOS, tok.EOS]].tolist() == [0, 0, 0, 0]


def test_text_lm_with_bpe_reports_bits_per_character_not_per_token(tmp_path):
    task = make_task("text-lm", text=str(write_text(tmp_path / "t.txt")), seq_len=16,
                     tokenizer="bpe", vocab_size=300)
    assert task.decode(task.ids("train").tolist()) == task.parts()["train"]
    torch.manual_seed(0)
    model = task.wrap(TinyGRU(16))
    metrics = task.evaluate(model, "val", batch_size=4)
    batches = list(task.batches("val", 4))
    with torch.no_grad():
        nats = sum(F.cross_entropy(model(b).flatten(0, 1), b.y.flatten(), reduction="sum")
                   for b in batches).item()
    chars = sum(len(task.decode(b.y.flatten().tolist())) for b in batches)
    assert metrics["bpc"] == pytest.approx(nats / chars / math.log(2), rel=1e-5)
    assert metrics["cross_entropy"] == pytest.approx(nats / sum(b.y.numel() for b in batches),
                                                     rel=1e-5)


def test_a_text_lm_run_generates_from_its_saved_vocabulary_when_the_text_is_gone(tmp_path):
    path = write_text(tmp_path / "t.txt")
    cfg = TrainConfig(model="gru", task="text-lm", seq_len=16, steps=3, d_model=16,
                      eval_every=0, out=str(tmp_path / "runs"), name="lm",
                      task_args={"text": str(path)}, threads=1)
    outcome = train(cfg)
    want = generate(cfg.run_dir, "the ", 10, temperature=0)
    path.write_text("entirely different characters: XYZ\n" * 400, encoding="utf-8")
    assert generate(cfg.run_dir, "the ", 10, temperature=0) == want
    path.unlink()
    assert generate(cfg.run_dir, "the ", 10, temperature=0) == want
    assert outcome.result.truncated is None  # text-lm reads windows: it never cuts an example
