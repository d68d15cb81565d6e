"""spanbert: a raw text corpus to a pretrained SpanBERT encoder and its SQuAD score, reproducibly."""

from __future__ import annotations

__version__ = "0.1.0"

from spanbert_cli import _moved

_moved.install()


def load_pretrained(path, *, step=None, device="cpu"):  # type: ignore[no-untyped-def]
    """Our SpanBert model (encoder, MLM and SBO heads) in eval mode, from a run directory (its latest
    checkpoint), a checkpoint, an export, or a Hugging Face BERT directory. Imports torch on first use."""
    from spanbert_cli.model.weights import load_pretrained as _load

    return _load(path, step=step, device=device)
