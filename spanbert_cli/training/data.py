"""What each training step reads: a global order over the sequences, cut into steps and micro-batches.

The order depends on nothing but the seed and the number of sequences, so that a resumed run, a run with
more data-loader workers and a run on more processes all see the same sequences at the same step:

* epoch ``e`` visits the train split in the order ``default_rng([seed, e]).permutation(n)``;
* the epochs are laid end to end into one stream of *global positions* ``0, 1, 2, …`` (position ``p`` is
  sequence ``perm_{p // n}[p % n]`` of epoch ``p // n``), so no sequence is dropped at an epoch's end and
  a split smaller than a batch still works;
* optimizer step ``s`` (0-based) consumes positions ``[s·B, (s+1)·B)`` for batch size ``B``, cut into
  micro-batches of ``m`` consecutive positions; micro-batch ``j`` of the step is global micro-batch
  ``(s, j)``. With ``world_size`` processes, rank ``r`` takes micro-batches ``r, r + world_size, …`` (the
  number of micro-batches must divide by the world size), so over the ranks every position is read
  exactly once, and 1 process accumulating 2 micro-batches reads what 2 processes read.

The masks of a sequence are `mask_sequence` of ``(seed, epoch, index)`` (the masking library), and the
dropout of micro-batch ``(s, j)`` is seeded from ``(seed, s, j)`` (`micro_batch_seed`), so the data
position in a checkpoint is just the step.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from spanbert_cli.errors import DataError, SpanbertError
from spanbert_cli.masking import MaskedDataset, MaskingConfig, VocabInfo, collate

#: Bump when the order or the seeding below changes (it enters the run fingerprint).
DATA_ORDER_VERSION = 1
ERROR_KEY = "__error__"

Key = tuple[int, int]  # (epoch, sequence index)


class GlobalOrder:
    """The stream of (epoch, sequence index) over the train split."""

    def __init__(self, num_sequences: int, seed: int):
        if num_sequences < 1:
            raise DataError("the train split has no sequences")
        self.n = int(num_sequences)
        self.seed = int(seed)
        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()

    def permutation(self, epoch: int) -> np.ndarray:
        perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, int(epoch)]).permutation(self.n)
            self._perms[epoch] = perm
            while len(self._perms) > 2:  # a step spans at most two epochs unless B > n
                self._perms.popitem(last=False)
        return perm

    def keys(self, start: int, stop: int) -> list[Key]:
        """The (epoch, index) of global positions [start, stop)."""
        out: list[Key] = []
        p = start
        while p < stop:
            epoch, offset = divmod(p, self.n)
            take = min(stop - p, self.n - offset)
            perm = self.permutation(epoch)
            out.extend((epoch, int(i)) for i in perm[offset : offset + take])
            p += take
        return out

    def epoch_at(self, position: int) -> int:
        return position // self.n


def micro_batch_seed(seed: int, step: int, micro: int) -> int:
    """The torch seed of global micro-batch ``micro`` of step ``step`` (0-based): dropout that depends on
    neither the process count nor where the run was resumed."""
    return int(
        np.random.SeedSequence([int(seed), int(step), int(micro)]).generate_state(1, np.uint64)[0] >> 1
    )


class StepSampler:
    """A DataLoader `batch_sampler`: this rank's micro-batches, step after step, from `start_step`."""

    def __init__(
        self,
        order: GlobalOrder,
        batch_size: int,
        micro_batch_size: int,
        start_step: int,
        stop_step: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size % micro_batch_size:
            raise ValueError("batch_size must be a multiple of micro_batch_size")
        if not 0 <= rank < world_size or (batch_size // micro_batch_size) % world_size:
            # Every rank must run the same number of micro-batches per step (DDP synchronises each step).
            raise ValueError(
                f"the {batch_size // micro_batch_size} micro-batches of a step do not split evenly over "
                f"{world_size} processes (rank {rank})"
            )
        self.order = order
        self.batch_size = batch_size
        self.micro_batch_size = micro_batch_size
        self.start_step = start_step
        self.stop_step = stop_step
        self.micro_indices = range(rank, batch_size // micro_batch_size, world_size)

    def __iter__(self) -> Iterator[list[Key]]:
        m = self.micro_batch_size
        for step in range(self.start_step, self.stop_step):
            base = step * self.batch_size
            for j in self.micro_indices:
                yield self.order.keys(base + j * m, base + (j + 1) * m)

    def __len__(self) -> int:
        return max(0, self.stop_step - self.start_step) * len(self.micro_indices)


class KeyedMaskedDataset:
    """`MaskedDataset` addressed by (epoch, index), so one data-loader iterator serves every epoch.

    Errors raised while masking (e.g. an id outside the vocabulary) come back as an item holding the error,
    which `collate_or_error` passes on: a data-loader worker would otherwise re-raise it with a multi-line
    message about the worker instead of the problem.
    """

    def __init__(self, masked: MaskedDataset, split: str = "train"):
        self.masked = masked
        self.split = split

    def __len__(self) -> int:
        return len(self.masked)

    def __getitem__(self, key: Key) -> dict[str, Any]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[Key]) -> list[dict[str, Any]]:
        """A micro-batch at once (the DataLoader calls this), masked in one batch per epoch it spans."""
        out: list[dict[str, Any]] = [{} for _ in keys]
        by_epoch: dict[int, list[tuple[int, int]]] = {}
        for pos, (epoch, index) in enumerate(keys):
            by_epoch.setdefault(int(epoch), []).append((pos, int(index)))
        try:
            for epoch, items in by_epoch.items():
                self.masked.set_epoch(epoch)  # each worker holds its own copy of the dataset
                fetched = self.masked.__getitems__([index for _, index in items])
                for (pos, _), item in zip(items, fetched, strict=True):
                    out[pos] = item
        except SpanbertError as e:
            return [{ERROR_KEY: (type(e).__name__, f"the {self.split} split: {e}")}]
        return out


def collate_or_error(batch: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    for item in batch:
        if ERROR_KEY in item:
            return {ERROR_KEY: item[ERROR_KEY]}
    return collate(batch, pad_id=pad_id)


def raise_if_error(batch: dict[str, Any]) -> None:
    if ERROR_KEY in batch:
        _, message = batch[ERROR_KEY]
        raise DataError(message)


def _loader(dataset: Any, batch_sampler: Any, pad_id: int, num_workers: int, pin_memory: bool) -> Any:
    import torch
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=functools.partial(collate_or_error, pad_id=pad_id),
        num_workers=num_workers,
        pin_memory=pin_memory,
        # The loader draws its workers' base seed from this generator rather than the global one; the
        # masks do not use it (they are pure functions), this only keeps the global RNG untouched.
        generator=torch.Generator().manual_seed(0),
    )


def train_loader(
    reader: Any,
    *,
    seed: int,
    masking: MaskingConfig,
    vocab: VocabInfo,
    max_sbo_positions: int,
    sampler: StepSampler,
    num_workers: int,
    pin_memory: bool = False,
) -> Any:
    dataset = KeyedMaskedDataset(
        MaskedDataset(reader, seed=seed, config=masking, vocab=vocab, max_sbo_positions=max_sbo_positions)
    )
    return _loader(dataset, sampler, vocab.pad_id, num_workers, pin_memory)


def eval_batches(
    num_sequences: int, micro_batch_size: int, rank: int = 0, world_size: int = 1
) -> list[list[Key]]:
    """The valid split in order, epoch 0, in micro-batches; rank r takes micro-batches r, r + world, …"""
    keys = [(0, i) for i in range(num_sequences)]
    chunks = [keys[i : i + micro_batch_size] for i in range(0, num_sequences, micro_batch_size)]
    return chunks[rank::world_size]


def eval_loader(
    reader: Any,
    *,
    seed: int,
    masking: MaskingConfig,
    vocab: VocabInfo,
    max_sbo_positions: int,
    batches: Sequence[list[Key]],
    num_workers: int,
    pin_memory: bool = False,
    split: str = "valid",
) -> Any:
    """A loader of fixed masked batches of `reader` (pretraining's validation, `eval mlm`); `batches` may be
    lazy (a sized iterable of key lists)."""
    dataset = KeyedMaskedDataset(
        MaskedDataset(reader, seed=seed, config=masking, vocab=vocab, max_sbo_positions=max_sbo_positions),
        split=split,
    )
    return _loader(dataset, batches, vocab.pad_id, num_workers, pin_memory)
