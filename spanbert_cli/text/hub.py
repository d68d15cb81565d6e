"""`--hf-dataset NAME[:CONFIG][@REVISION]`: a Hugging Face Hub dataset, streamed through `datasets`.

The run is planned against one commit of the dataset's repository: the revision is resolved on the Hub
when the run is planned (or taken as given) and the data is streamed from that commit, so the artifact's
fingerprint (name, config, split and that commit) describes what was read. Offline, the stage stops in one
line saying how to pass the dataset's files instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from spanbert_cli.errors import DataError, UsageError
from spanbert_cli.text.corpus import Document

_SPEC = re.compile(r"(?P<name>[^:@\s]+)(?::(?P<config>[^:@\s]+))?(?:@(?P<revision>[^:@\s]+))?")
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class HubSource:
    """A split of a Hub dataset at one commit of its repository."""

    dataset: str
    config: str | None
    split: str
    revision: str
    size: int = 0  # unknown before it is read (files give their size)

    @property
    def name(self) -> str:
        """What the `source.file` column and messages call it, as a file's name: hf:NAME[:CONFIG]/SPLIT."""
        return f"hf:{self.dataset}" + (f":{self.config}" if self.config else "") + f"/{self.split}"

    def identity(self) -> dict[str, Any]:
        """The part that enters the artifact's fingerprint."""
        return {"name": self.dataset, "config": self.config, "split": self.split, "revision": self.revision}


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """NAME[:CONFIG][@REVISION] → (name, config, revision)."""
    m = _SPEC.fullmatch(spec.strip())
    if not m:
        raise UsageError(
            f"--hf-dataset {spec!r}: expected NAME[:CONFIG][@REVISION], e.g. Salesforce/wikitext:wikitext-103-raw-v1"
        )
    return m.group("name"), m.group("config"), m.group("revision")


def offline() -> str | None:
    """The environment variable that puts the Hub offline, if one does."""
    for var in _OFFLINE_VARS:
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return var
    return None


def _unreachable(spec: str, name: str, reason: str) -> DataError:
    return DataError(
        f"--hf-dataset {spec}: the Hugging Face Hub cannot be reached ({reason}); download the dataset's "
        f"files where it can (e.g. `hf download {name} --repo-type dataset --include '*.parquet' --local-dir DIR`) "
        "and pass the split's files instead (e.g. spanbert tokenize 'DIR/**/train-*.parquet')"
    )


def resolve(spec: str, split: str) -> HubSource:
    """The dataset at the commit its revision (default: the main branch) points to now."""
    name, config, revision = parse_spec(spec)
    if var := offline():
        raise _unreachable(spec, name, f"offline: {var} is set")
    from huggingface_hub import HfApi

    try:
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError:  # huggingface_hub < 0.23
        from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().dataset_info(name, revision=revision, timeout=_TIMEOUT_S)
    except GatedRepoError:
        raise DataError(
            f"--hf-dataset {spec}: the dataset is gated; accept its conditions on the Hub and log in "
            "(`hf auth login`)"
        ) from None
    except RevisionNotFoundError:
        raise DataError(f"--hf-dataset {spec}: the dataset has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise DataError(
            f"--hf-dataset {spec}: no dataset {name!r} on the Hub (a private one needs `hf auth login`)"
        ) from None
    except Exception as e:  # the network stack's errors (httpx, OS, TLS) have no common base to name
        raise _unreachable(spec, name, _first_line(e)) from e
    if not info.sha:
        raise _unreachable(spec, name, "the Hub did not say which commit it serves")
    return HubSource(name, config, split, info.sha)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def stream(src: HubSource, part: tuple[int, int] | None) -> Iterable[dict[str, Any]]:
    """The rows of the split at the resolved commit, streamed (`part` i/N: `datasets`' share for node i-1
    of N: whole data files when their number divides by N, else every N-th row)."""
    import datasets

    try:
        ds = datasets.load_dataset(
            src.dataset, src.config, split=src.split, streaming=True, revision=src.revision
        )
    except Exception as e:  # unknown config or split, a missing data file, the network: datasets' own words
        raise DataError(f"--hf-dataset {src.name}: cannot be loaded ({_first_line(e)})") from e
    return share(ds, part)


def share(ds: Any, part: tuple[int, int] | None) -> Any:
    """Part i/N of an `IterableDataset`, deterministic."""
    if part is None:
        return ds
    from datasets.distributed import split_dataset_by_node

    return split_dataset_by_node(ds, rank=part[0] - 1, world_size=part[1])


def iter_documents(rows: Iterable[dict[str, Any]], label: str, text_field: str) -> Iterator[Document]:
    """One document per row with text (`ordinal`: the row's index in the stream; `consumed`: the UTF-8
    bytes of text so far, there being no file to count)."""
    consumed = 0
    it = iter(rows)
    row = 0
    while True:
        try:
            record = next(it)
        except StopIteration:
            return
        except Exception as e:  # a download or decoding failure while streaming
            raise DataError(f"{label}: row {row}: cannot be read ({_first_line(e)})") from e
        if text_field not in record:
            raise DataError(
                f"{label}: row {row}: no column {text_field!r} (its columns: {', '.join(record)}); "
                "pass --text-field with the right name"
            )
        text = record[text_field]
        if not isinstance(text, str):
            what = "null" if text is None else f"{type(text).__name__}, not a string"
            raise DataError(f"{label}: row {row}: {text_field!r} is {what}")
        consumed += len(text.encode("utf-8"))
        if text.strip():
            yield Document(text, row, consumed)
        row += 1
