"""Translation from the user's sentence pairs: chrF, BLEU and exact match of greedy output.

The data is a UTF-8 text file of tab-separated pairs, one `source<TAB>target` per line, the format
of the Tatoeba sentence pairs (manythings.org/anki) that the PyTorch ("NLP From Scratch:
Translation with a Sequence to Sequence Network and Attention") and Keras ("English-to-Spanish
translation with a sequence-to-sequence Transformer") tutorials train on; further columns (Anki's
attribution) are ignored. The pairs are shuffled under the task seed and split 80/10/10.

Models are encoder-decoders (transformer-ed, rnn-ed): the encoder reads the source, the decoder
writes the target after <bos>, teacher-forced in training, and greedily with step() at
evaluation until it writes <eos>. One tokenizer (seqarena.tasks.tokenizer) serves both languages:
characters, or BPE learnt from both sides of the training pairs. A source longer than seq_len
tokens, or a target longer than seq_len - 1 (room for <bos> or <eos>), is cut and counted.

chrF (Popović 2015) is the metric, BLEU (Papineni et al. 2002) rides beside it, both corpus-level
and computed by sacrebleu (Post 2018, "A Call for Clarity in Reporting BLEU Scores") with its
default settings, never by hand; exact match is the share of sentences reproduced exactly. The
baseline copies the source, which scores well between close languages and must be beaten.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqarena.errors import ConfigError, UserError
from seqarena.fileio import read_utf8
from seqarena.tasks.base import (IGNORE, Batch, DatasetTask, TaskConfig, TokenHead, register_task,
                                 token_sums, unwrapped)
from seqarena.tasks.classify import dealing_rng
from seqarena.tasks.dates import EncoderDecoderModel
from seqarena.tasks import tokenizer as tok

# N examples, B batch, L length (seq_len), T target length (seq_len), D model width, V vocabulary

SPLIT_FRACTIONS = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """(source, target) of each line; UserError naming the first line without a tab."""
    pairs = []
    for number, line in enumerate(read_utf8(path, "pairs file").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise UserError(f"{path}:{number}: no tab; each line must be source<TAB>target")
        pairs.append((fields[0].strip(), fields[1].strip()))
    return pairs


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """chrF and BLEU (0-100, sacrebleu's defaults) and exact match (0-1) of a corpus."""
    import sacrebleu

    return {"chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score,
            "bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
            "exact_match": float(np.mean([h == r for h, r in zip(hypotheses, references)]))}


@dataclass(frozen=True)
class TranslateConfig(TaskConfig):
    seq_len: int = 64  # tokens of a source, and of a target with its <bos>/<eos>; longer are cut
    data: str = ""  # a UTF-8 file of source<TAB>target lines
    tokenizer: str = "char"  # "char" (one token per character) or "bpe" (needs seqarena[bpe])
    vocab_size: int = 1000  # bpe: tokens learnt from the training pairs (specials and bytes incl.)

    def validate(self) -> None:
        super().validate()
        self.need_data("translate", self.data, "FILE", "a UTF-8 file of source<TAB>target lines")
        self.need_seq_len("translate", 2, "a target token and its <bos> or <eos>")
        tok.check_kind(self.tokenizer, self.vocab_size, type(self).__name__)


@register_task("translate")
class Translate(DatasetTask):
    """Translate each source sentence into its target; greedy decoding, scored by sacrebleu."""

    config_cls = TranslateConfig
    summary = "your source<TAB>target sentence pairs, encoder-decoder models (chrF, BLEU)"
    metric_name = "chrf"
    higher_is_better = True
    head_kind = "seq2seq"

    def __init__(self, config: TranslateConfig):
        super().__init__(config)
        self._pairs: dict[str, list[tuple[str, str]]] | None = None  # read on first use
        self._tokenizer: tok.Tokenizer | None = None
        self._data: dict[str, Batch] = {}
        self._cut: dict[str, int] = {}  # split -> pairs with a side cut to seq_len
        self.restored = False  # True once restore() read a run directory

    @property
    def pairs(self) -> dict[str, list[tuple[str, str]]]:
        if self._pairs is None:
            path = Path(self.config.data)
            pairs = read_pairs(path)
            if len(pairs) < 10:
                raise UserError(f"{path} holds {len(pairs)} pair(s); a train/val/test split of "
                                "80/10/10 needs at least 10")
            order = dealing_rng(self.config.seed).permutation(len(pairs))
            self._pairs = {s: [pairs[i] for i in order[int(a * len(pairs)):int(b * len(pairs))]]
                           for s, (a, b) in SPLIT_FRACTIONS.items()}
        return self._pairs

    @property
    def targets(self) -> list[str]:
        """Every target as written, in the order of the rows of split_data (train, val, test)."""
        return [t for split in self.splits for _, t in self.pairs[split]]

    @property
    def tokenizer(self) -> tok.Tokenizer:
        if self._tokenizer is None:
            texts = [side for pair in self.pairs["train"] for side in pair]
            self._tokenizer = tok.train_tokenizer(self.config.tokenizer, texts,
                                                  self.config.vocab_size)
        return self._tokenizer

    def save(self, run_dir: Path) -> None:
        self.tokenizer.save(run_dir)

    def restore(self, run_dir: Path) -> None:
        self.restored = True
        self._tokenizer = tok.load_tokenizer(run_dir) or self._tokenizer
        self._data.clear()

    def encode(self, pairs: list[tuple[str, str]]) -> tuple[Batch, int]:
        """(batch, pairs cut): src (N, L) and its mask, tgt_in = <bos> t, y = t <eos> (N, T)."""
        L, t = self.config.seq_len, self.tokenizer
        sources, targets = [t.encode(s) for s, _ in pairs], [t.encode(s) for _, s in pairs]
        src, src_mask, _ = tok.pack(sources, L)
        tgt_in, _, _ = tok.pack([[tok.BOS] + ids for ids in targets], L)
        y, y_mask, _ = tok.pack([ids[:L - 1] + [tok.EOS] for ids in targets], L)
        y[~y_mask] = IGNORE
        cut = sum(len(s) > L or len(ids) > L - 1 for s, ids in zip(sources, targets))
        return Batch(src, y, src_mask, {"src": src, "src_mask": src_mask, "tgt_in": tgt_in}), cut

    def split_data(self, split: str) -> Batch:
        if split not in self._data:
            self._data[split], self._cut[split] = self.encode(self.pairs[split])
            # each pair's row in the shuffled file, to score against its target as written
            first = sum(len(self.pairs[s]) for s in self.splits[:self.splits.index(split)])
            self._data[split].extra["row"] = first + torch.arange(len(self.pairs[split]))
        return self._data[split]

    def truncated(self) -> int:
        for split in self.splits:
            self.split_data(split)
        return sum(self._cut.values())

    def wrap(self, backbone: nn.Module, d_model: int | None = None) -> nn.Module:
        if not backbone.seq2seq:
            raise ConfigError(f"task 'translate' needs an encoder-decoder model (transformer-ed, "
                              f"rnn-ed); {type(backbone).__name__} reads one sequence")
        if not self.restored:  # a bad file fails here, before a run writes anything
            for split in self.splits:
                self.split_data(split)
        d, V = d_model or backbone.d_model, self.tokenizer.vocab_size
        return EncoderDecoderModel(nn.Embedding(V, d), backbone, TokenHead(d, V))

    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(pred.flatten(0, 1), batch.y.flatten(), ignore_index=IGNORE)

    @torch.no_grad()
    def greedy(self, model: nn.Module, batch: Batch) -> list[list[int]]:
        """Each source's translation as ids, decoded greedily with step() up to <eos>."""
        model = unwrapped(model)
        src_mask = batch.extra["src_mask"]
        try:
            memory = model.backbone.encode(model.embedding(batch.extra["src"]), src_mask)
            state = model.backbone.init_state(len(memory), memory, src_mask)
            token = torch.full((len(memory),), tok.BOS, device=memory.device)
            done = torch.zeros(len(memory), dtype=torch.bool, device=memory.device)
            out = []
            for _ in range(self.config.seq_len):
                y, state = model.backbone.step(state, model.embedding(token))  # (B, D)
                token = model.head(y).argmax(-1)  # (B,)
                out.append(token)
                done |= token == tok.EOS
                if done.all():
                    break
        except NotImplementedError as e:
            raise UserError(f"task 'translate' decodes with the model's step(): {e}") from None
        rows = torch.stack(out, dim=1).tolist()  # (B, T)
        return [row[:row.index(tok.EOS)] if tok.EOS in row else row for row in rows]

    def evaluate_outputs(self, model: nn.Module, split: str = "val", batch_size: int = 64
                         ) -> tuple[dict[str, float], tuple[list, list]]:
        """The corpus scores, and the greedy outputs with their references."""
        return self._decoded(model, self.batches(split, batch_size))

    def evaluate_batches(self, model: nn.Module, batches: Iterator[Batch]) -> dict[str, float]:
        return self._decoded(model, batches)[0]

    @torch.no_grad()
    def _decoded(self, model: nn.Module, batches: Iterator[Batch]):
        """Corpus-level scores: chrF and BLEU are not means over sentences, so every greedy
        output of the split is gathered first and scored once."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        hypotheses, references, ce, n = [], [], 0.0, 0.0
        targets = self.targets
        try:
            for batch in batches:
                batch = batch.to(device)
                hypotheses += [self.tokenizer.decode(ids) for ids in self.greedy(model, batch)]
                references += [targets[row] for row in batch.extra["row"].tolist()]
                total, count = token_sums(model(batch), batch.y)["cross_entropy"]
                ce, n = ce + float(total.sum()), n + float(count.sum())  # per-example sums
        finally:
            model.train(was_training)
        scores = {**corpus_scores(hypotheses, references), "cross_entropy": ce / n if n else np.nan}
        return scores, (hypotheses, references)

    def baselines(self) -> dict[str, float]:
        """Copying the source, scored on the test split as the model is."""
        sources = [s for s, _ in self.pairs["test"]]
        targets = [t for _, t in self.pairs["test"]]
        return {f"copy_{k}": v for k, v in corpus_scores(sources, targets).items()}

    def translate(self, model: nn.Module, texts: list[str]) -> list[str]:
        """Greedy translations of `texts`."""
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            batch, _ = self.encode([(text, "") for text in texts])
            return [self.tokenizer.decode(ids) for ids in self.greedy(model, batch.to(device))]
        finally:
            model.train(was_training)

    def generate(self, model: nn.Module, prompt: str, max_new_tokens: int = 0,
                 temperature: float = 1.0, seed: int = 0) -> str:
        """The greedy translation of `prompt` (`seqarena generate RUN --prompt TEXT`)."""
        return self.translate(model, [prompt])[0]
