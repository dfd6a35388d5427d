"""`electra embed`: one vector per text from any ELECTRA folder's encoder, in length-sorted batches.

texts ──tokenize (cut at max_length)──▶ encoder ──pool: mean over the tokens, or [CLS]──▶ (N, hidden) float32
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable

import numpy as np
import torch

from electra.finetune import Encoded, batches, load_pretrained
from electra.parallel import autocast, pick_device, resolve_precision
from electra.progress import progress_bar
from electra.tokenizer import encode_cut, head_chars, load_model_tokenizer

POOLINGS = ("mean", "cls")


class Embedder:
    """The encoder of an ELECTRA folder (pre-trained or fine-tuned; ours, a hub name or any
    transformers ELECTRA folder) or of a pre-training run's newest checkpoint, loaded once. A
    text's vector is the mean of its tokens' last hidden states ([CLS] and [SEP] included,
    padding not), or with `pooling="cls"` the first token's; `normalize` scales each to unit
    length (cosine similarity is then a dot product). Texts longer than `max_length` tokens
    (default: the model's positions) are cut there."""

    def __init__(
        self,
        model_dir: str | os.PathLike,
        max_length: int | None = None,
        device: str = "auto",
        pooling: str = "mean",
        normalize: bool = False,
        precision: str = "fp32",
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.encoder, self.folder = load_pretrained(model_dir)
        self.device = pick_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.encoder.to(self.device).eval()
        self.tok = load_model_tokenizer(self.folder, self.encoder.cfg.vocab_size)
        self.pad_id = self.tok.token_to_id("[PAD]")
        positions = self.encoder.cfg.max_positions
        self.limit = positions if max_length is None else max_length
        if not 3 <= self.limit <= positions:
            raise ValueError(f"max-length must be 3 ([CLS], a token, [SEP]) to the model's {positions} positions")
        self.tok.enable_truncation(self.limit)
        self.head_chars = head_chars(self.tok, self.limit)
        self.pooling, self.normalize = pooling, normalize
        self.dim = self.encoder.cfg.hidden_size

    def __call__(self, texts: list[tuple[str, str | None]], batch_size: int = 64) -> tuple[np.ndarray, int]:
        """(N, hidden) float32 vectors in input order, and how many texts were cut."""
        parts, cut = [], 0
        for vectors, n in self.stream(texts, batch_size, total=len(texts), progress=False):
            parts.append(vectors)
            cut += n
        return (np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)), cut

    @torch.no_grad()
    def stream(
        self,
        texts: Iterable[tuple[str, str | None]],
        batch_size: int = 64,
        chunk_size: int = 8192,
        total: int | None = None,
        progress: bool | None = None,
    ):
        """(vectors of a chunk of texts, in their order; how many of them were cut), `chunk_size` texts at a time."""
        if batch_size < 1 or chunk_size < 1:
            raise ValueError(f"batch size and chunk size must be at least 1, got {batch_size} and {chunk_size}")
        texts = iter(texts)
        disable = None if progress is None else not progress
        with progress_bar(total=total, desc="embed", unit="text", disable=disable) as bar:
            while part := list(itertools.islice(texts, chunk_size)):
                encodings = encode_cut(self.tok, part, self.head_chars, self.limit)
                data = Encoded([e.ids for e in encodings], [e.type_ids for e in encodings], [0] * len(part))
                out = np.zeros((len(part), self.dim), np.float32)
                for group, ids, types, mask, _ in batches(data, batch_size, None, self.pad_id):
                    ids, types, mask = ids.to(self.device), types.to(self.device), mask.to(self.device)
                    with autocast(self.device, self.precision):
                        h = self.encoder(ids, types, mask)  # (B, T, H)
                    h = h.float()
                    if self.pooling == "cls":
                        v = h[:, 0]
                    else:
                        m = mask.unsqueeze(-1).float()
                        v = (h * m).sum(1) / m.sum(1)
                    if self.normalize:
                        v = torch.nn.functional.normalize(v, dim=-1)
                    out[group] = v.cpu().numpy()
                    bar.update(len(group))
                yield out, sum(bool(e.overflowing) for e in encodings)
