"""Masked sequences as a dataset, and their collation into training batches.

`MaskedDataset` masks sequence `index` of a reader for `(seed, epoch)` on demand (a pure function, so any
number of data-loader workers give the same batches); `collate` lays a list of them end to end, without
padding (or pads them, for the reference layout), with the MLM and SBO targets as rows of the batch.
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


def packed_layout(lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Where B sequences of these lengths lie when their tokens are laid end to end (`model.Packed`):
    cu_seqlens [B + 1] (int32), position_ids [N], padded_index [N] (b * max + t), max_seqlen (0-dim)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    width = int(lengths.max())
    cu = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=cu[1:])
    row_start = np.repeat(cu[:-1], lengths)  # [N] the row of each token's sequence's first token
    position = np.arange(int(cu[-1]), dtype=np.int64) - row_start
    padded = np.repeat(np.arange(len(lengths), dtype=np.int64) * width, lengths) + position
    return {
        "cu_seqlens": cu.astype(np.int32),
        "position_ids": position,
        "padded_index": padded,
        "max_seqlen": np.array(width, dtype=np.int64),
    }


def collate(batch: list[dict[str, Any]], pad_id: int, padded: bool = False) -> dict[str, torch.Tensor]:
    """A micro-batch as the model takes it, with the MLM and SBO targets as rows of its token states.

    Unpadded (the default): the sequences' tokens end to end, ``input_ids [N]`` plus their layout
    (`packed_layout`), and target positions ``offset[b] + pos``. ``padded=True`` (the reference layout):
    ``input_ids [B, T]`` padded to the longest sequence, an ``attention_mask``, and positions
    ``b * T + pos``. Either way the heads gather just the target rows of the hidden states instead of
    running over every token. Use with ``functools.partial(collate, pad_id=vocab.pad_id)`` as a
    DataLoader ``collate_fn``.
    """
    import torch

    if not batch:
        raise ValueError("cannot collate an empty batch")
    lengths = np.array([item["input_ids"].shape[0] for item in batch], dtype=np.int64)
    n_rows, width = len(batch), int(lengths.max())
    if padded:
        input_ids = np.full((n_rows, width), pad_id, dtype=np.int64)
        for row, item in enumerate(batch):
            input_ids[row, : lengths[row]] = item["input_ids"]
        row_offset = np.arange(n_rows, dtype=np.int64) * width
        layout = {"attention_mask": torch.from_numpy(np.arange(width)[None, :] < lengths[:, None])}
    else:
        input_ids = np.concatenate([item["input_ids"] for item in batch]).astype(np.int64)
        packed = packed_layout(lengths)
        row_offset = packed["cu_seqlens"][:-1].astype(np.int64)
        layout = {k: torch.from_numpy(v) for k, v in packed.items()}
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
        **layout,
        "mlm_positions": cat("mlm_positions", mlm_offset),
        "mlm_labels": cat("mlm_labels"),
        "sbo_positions": cat("sbo_positions", sbo_offset),
        "sbo_left": cat("sbo_left", sbo_offset),
        "sbo_right": cat("sbo_right", sbo_offset),
        "sbo_rel_pos": cat("sbo_rel_pos"),
        "sbo_labels": cat("sbo_labels"),
    }
