"""Data shipped with spanbert: the sample corpus of the quick start (see sample/LICENSE.md)."""

from pathlib import Path

SAMPLE_CORPUS = Path(__file__).parent / "sample"
