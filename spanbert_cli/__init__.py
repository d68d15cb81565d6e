"""spanbert: a raw text corpus to a pretrained SpanBERT encoder and its SQuAD score, reproducibly."""

from __future__ import annotations

__version__ = "0.1.0"
