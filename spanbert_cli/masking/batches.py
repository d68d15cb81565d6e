"""Masked sequences as a dataset, and their collation into padded training batches.

`MaskedDataset` masks sequence `index` of a reader for `(seed, epoch)` on demand (a pure function, so any
number of data-loader workers give the same batches); `collate` pads a list of them into tensors, with
the MLM and SBO targets as flat positions into the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from spanbert_cli.masking.spans import MaskingConfig, VocabInfo, _check_sbo_positions, _length_cdf, mask_batch

if TYPE_CHECKING:
    import torch


class SequenceReader(Protocol):
    """Random access to the ``[CLS] ... [SEP]`` id sequences of a pretraining data set."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


class MaskedDataset:
    """Map-style dataset (``__len__`` + ``__getitem__``) yielding masked sequences for pretraining.

    The masks are `mask_sequence` of ``(seed, epoch, index)``, so they are the same whatever the number
    of data-loader workers and equal what ``mask-preview`` shows. Call `set_epoch` before creating the
    epoch's data-loader iterator: worker processes copy the dataset when the iterator starts (with
    ``persistent_workers=True`` they would keep the old epoch).
    """

    def __init__(
        self,
        reader: SequenceReader,
        *,
        seed: int,
        config: MaskingConfig,
        vocab: VocabInfo,
        max_sbo_positions: int = 15,
        epoch: int = 0,
    ) -> None:
        _length_cdf(config)  # validate now rather than in a worker
        _check_sbo_positions(max_sbo_positions)
        self.reader = reader
        self.seed = int(seed)
        self.config = config
        self.vocab = vocab
        self.max_sbo_positions = int(max_sbo_positions)
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Batched fetch: PyTorch's DataLoader calls this (when present) with a micro-batch of indices,
        which lets the masking run over the whole batch at once."""
        size = len(self.reader)
        keys = [int(i) for i in indices]
        for index in keys:
            # A negative index would key the generator differently from its positive twin.
            if not 0 <= index < size:
                raise IndexError(f"sequence index {index} out of range for {size} sequences")
        masked = mask_batch(
            [self.reader[i] for i in keys],
            seed=self.seed,
            epoch=self.epoch,
            indices=keys,
            config=self.config,
            vocab=self.vocab,
            max_sbo_positions=self.max_sbo_positions,
        )
        return [
            {
                "index": index,
                "input_ids": m.input_ids,
                "mlm_positions": m.mlm_positions,
                "mlm_labels": m.mlm_labels,
                "sbo_positions": m.sbo_positions,
                "sbo_left": m.sbo_left,
                "sbo_right": m.sbo_right,
                "sbo_rel_pos": m.sbo_rel_pos,
                "sbo_labels": m.sbo_labels,
            }
            for index, m in zip(keys, masked, strict=True)
        ]


def collate(batch: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a micro-batch to its longest sequence and flatten the target positions into ``[B * T]``.

    Positions come out as ``b * T + pos`` so the model can gather just the target rows of its
    ``[B * T, H]`` hidden states instead of running the heads over every token.
    Use with ``functools.partial(collate, pad_id=vocab.pad_id)`` as a DataLoader ``collate_fn``.
    """
    import torch

    if not batch:
        raise ValueError("cannot collate an empty batch")
    lengths = np.array([item["input_ids"].shape[0] for item in batch], dtype=np.int64)
    n_rows, width = len(batch), int(lengths.max())
    input_ids = np.full((n_rows, width), pad_id, dtype=np.int64)
    for row, item in enumerate(batch):
        input_ids[row, : lengths[row]] = item["input_ids"]
    attention = np.arange(width)[None, :] < lengths[:, None]
    row_offset = np.arange(n_rows, dtype=np.int64) * width
    mlm_offset = np.repeat(row_offset, [item["mlm_positions"].shape[0] for item in batch])
    sbo_offset = np.repeat(row_offset, [item["sbo_positions"].shape[0] for item in batch])

    def cat(key: str, offset: np.ndarray | None = None) -> torch.Tensor:
        joined = np.concatenate([item[key] for item in batch]).astype(np.int64)  # a fresh, owned array
        if offset is not None:
            joined += offset
        return torch.from_numpy(joined)

    return {
        "index": torch.tensor([int(item["index"]) for item in batch], dtype=torch.int64),
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention),
        "mlm_positions": cat("mlm_positions", mlm_offset),
        "mlm_labels": cat("mlm_labels"),
        "sbo_positions": cat("sbo_positions", sbo_offset),
        "sbo_left": cat("sbo_left", sbo_offset),
        "sbo_right": cat("sbo_right", sbo_offset),
        "sbo_rel_pos": cat("sbo_rel_pos"),
        "sbo_labels": cat("sbo_labels"),
    }
