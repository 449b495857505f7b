"""translate: sentence pairs, sacrebleu's chrF and BLEU, greedy decoding that learns."""

import numpy as np
import pytest
import sacrebleu
import torch

from seqarena.errors import ConfigError, UserError
from seqarena.models import build_model
from seqarena.tasks import make_task
from seqarena.tasks import tokenizer as tok
from seqarena.config import TrainConfig
from seqarena.training.inference import generate
from seqarena.training.train import train

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def write_pairs(path, n=400, seed=0, words=1):
    """Lines `source<TAB>reversed source<TAB>attribution`, as Anki files carry a third column."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            source = " ".join("".join(rng.choice(list("abcd"), rng.integers(2, 6)))
                              for _ in range(words))
            f.write(f"{source}\t{source[::-1]}\tCC-BY 2.0 (France) Attribution: tatoeba.org\n")
    return path


def test_pairs_are_read_split_80_10_10_and_encoded_with_bos_and_eos(tmp_path):
    path = write_pairs(tmp_path / "p.tsv", n=50)
    expected = [tuple(line.split("\t")[:2]) for line in path.read_text().splitlines()]
    task = make_task("translate", data=str(path), seq_len=8)
    assert [len(task.pairs[s]) for s in ("train", "val", "test")] == [40, 5, 5]
    assert sorted(p for s in task.splits for p in task.pairs[s]) == sorted(expected)
    batch = task.split_data("val")
    t = task.tokenizer
    for i, (source, target) in enumerate(task.pairs["val"]):
        n, m = len(source), len(target)
        assert t.decode(batch.extra["src"][i, :n].tolist()) == source
        assert batch.extra["src_mask"][i].sum() == n
        assert batch.extra["tgt_in"][i, :m + 1].tolist() == [tok.BOS] + t.encode(target)
        assert batch.y[i, :m + 1].tolist() == t.encode(target) + [tok.EOS]
        assert (batch.y[i, m + 1:] == -100).all()


def test_chrf_and_bleu_equal_sacrebleu_on_the_greedy_outputs(tmp_path):
    task = make_task("translate", data=str(write_pairs(tmp_path / "p.tsv", words=3)), seq_len=24)
    torch.manual_seed(0)
    model = task.wrap(build_model("transformer-ed", d_model=16))
    metrics = task.evaluate(model, "test", batch_size=7)  # several batches: scored as one corpus
    hypotheses = task.translate(model, [s for s, _ in task.pairs["test"]])
    references = [t for _, t in task.pairs["test"]]
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score)
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    assert metrics["exact_match"] == np.mean([h == r for h, r in zip(hypotheses, references)])
    sources = [s for s, _ in task.pairs["test"]]
    base = task.baselines()
    assert base["copy_chrf"] == pytest.approx(sacrebleu.corpus_chrf(sources, [references]).score)
    assert base["copy_bleu"] == pytest.approx(sacrebleu.corpus_bleu(sources, [references]).score)


def test_a_tiny_run_learns_to_reverse_strings_far_above_the_copy_baseline(tmp_path):
    path = write_pairs(tmp_path / "p.tsv", n=2000)
    cfg = TrainConfig(model="rnn-ed", task="translate", seq_len=8, steps=300, d_model=32,
                      lr=3e-3, eval_every=0, out=str(tmp_path / "runs"), name="rev",
                      task_args={"data": str(path)}, threads=1)
    result = train(cfg).result
    metrics, base = result.metrics, result.baselines
    assert metrics["test_exact_match"] > base["copy_exact_match"] + 0.5
    assert metrics["test_chrf"] > base["copy_chrf"] + 30
    path.unlink()  # generate reads the run's tokenizer, not the data
    assert generate(cfg.run_dir, "abcd") == "dcba"


def test_long_pairs_are_cut_and_counted(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("".join(f"{'a' * n}\t{'b' * (12 - n)}\n" for n in range(1, 12)), "utf-8")
    task = make_task("translate", data=str(path), seq_len=6)
    # a source over 6 tokens (n = 7..11) or a target over 5 (12 - n = 6..11, n = 1..6)
    assert task.truncated() == 11
    path.write_text("".join(f"{'a' * n}\t{'b' * n}\n" for n in range(1, 12)), "utf-8")
    assert make_task("translate", data=str(path), seq_len=6).truncated() == 6  # n = 6..11


def test_translate_needs_an_encoder_decoder(tmp_path):
    task = make_task("translate", data=str(write_pairs(tmp_path / "p.tsv", n=20)))
    with pytest.raises(ConfigError, match="needs an encoder-decoder model"):
        task.wrap(build_model("lstm", d_model=16))


@pytest.mark.parametrize("content, message", [
    (b"hello\tbonjour\nno tab here\n", r"p.tsv:2: no tab"),
    (b"\n\n", "is empty"),
    (b"caf\xe9\tcoffee\n", r"p.tsv:1: not UTF-8"),
    (b"a\tb\n" * 3, "holds 3 pair"),
])
def test_bad_pairs_files_are_one_line_user_errors(tmp_path, content, message):
    path = tmp_path / "p.tsv"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as e:
        make_task("translate", data=str(path)).wrap(build_model("rnn-ed", d_model=16))
    assert "\n" not in str(e.value)
