"""Import paths of modules that moved when the package was laid out by pipeline stage.

`import spanbert_cli.shard_reader` (documented before the move) keeps working: a meta-path finder maps
each old name onto its new module, which is imported once and shared, so both names are the same module.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

MOVED = {
    "spanbert_cli.corpus": "spanbert_cli.text.corpus",
    "spanbert_cli.sentences": "spanbert_cli.text.sentences",
    "spanbert_cli.tokenizer": "spanbert_cli.text.wordpiece",
    "spanbert_cli.tokenizing": "spanbert_cli.text.tokenize",
    "spanbert_cli.arrow_io": "spanbert_cli.shards.arrow_io",
    "spanbert_cli.sharding": "spanbert_cli.shards.pack",
    "spanbert_cli.shard_reader": "spanbert_cli.shards.reader",
    "spanbert_cli.preview": "spanbert_cli.masking.preview",
    "spanbert_cli.flops": "spanbert_cli.model.flops",
    "spanbert_cli.weights": "spanbert_cli.model.weights",
    "spanbert_cli.export": "spanbert_cli.model.export",
    "spanbert_cli.eval_mlm": "spanbert_cli.eval.mlm",
    "spanbert_cli.squad": "spanbert_cli.eval.squad",
    "spanbert_cli.squad.data": "spanbert_cli.eval.squad.data",
    "spanbert_cli.squad.features": "spanbert_cli.eval.squad.features",
    "spanbert_cli.squad.finetune": "spanbert_cli.eval.squad.finetune",
    "spanbert_cli.squad.scoring": "spanbert_cli.eval.squad.scoring",
    "spanbert_cli.recipe": "spanbert_cli.pipeline.recipe",
    "spanbert_cli.report": "spanbert_cli.pipeline.report",
    "spanbert_cli.distributed": "spanbert_cli.training.distributed",
    "spanbert_cli.locks": "spanbert_cli.artifacts.locks",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, self, is_package=name == "spanbert_cli.squad")

    def create_module(self, spec: Any) -> Any:
        return importlib.import_module(MOVED[spec.name])  # the new module itself, under the old name too

    def exec_module(self, module: Any) -> None:
        pass


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())  # before the path finder, which would load a second copy
