"""A catalogue of bad inputs across every command, one row each: the exit code, one line on stderr that
starts with `error:` and names the fault, no traceback, never "unexpected <Python error>", and nothing
left behind: no `--out`, no `.tmp-*` / `.old-*` / lock file beside it, and every file that was there
before (the user's, and the real artifacts the cases read) exactly as it was.

Each row's builder gets the test's own `tmp_path` and `r`, the real inputs of this module (a corpus,
a tokenizer, a tokenize artifact, shards, a tiny complete pretraining run, SQuAD files), and returns the
command line and the `--out` it names (None when the command writes nothing). A builder that damages an
artifact damages a copy in `tmp_path`; the shared ones are checked unchanged after every row.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import CORPUS, DATA, ROOT, SQUAD, assert_one_line_error

pytestmark = pytest.mark.usefixtures("one_thread")

BUNDLED_SQUAD = ROOT / "spanbert_cli" / "data" / "squad"
CP1252 = DATA / "bad-encodings" / "inaugural--2005-Bush.txt"  # the 2005 inaugural address as published

COMMANDS = (
    "tokenize",
    "shard",
    "mask-preview",
    "pretrain",
    "export",
    "eval squad",
    "eval mlm",
    "run",
    "report",
    "verify",
    "lineage",
)


# --------------------------------------------------------------------------------------------------
# the real inputs, built once by the real stages


@dataclass
class Inputs:
    corpus: Path  # one real speech (UTF-8)
    tokenizer: Path  # a tokenizer.json spanbert trained
    tok: Path  # a tokenize artifact made with it
    shards: Path  # shards of `tok` (64 tokens, 3 valid documents)
    run: Path  # a 2-step tiny pretraining run on `shards`, one checkpoint, its export in run/hf
    other_shards: Path  # shards made with another tokenizer
    other_tok: Path  # the tokenize artifact of `other_shards`
    squad_train: Path  # the bundled SQuAD v1.1 training sample
    squad_dev: Path  # the bundled SQuAD v1.1 dev sample
    predictions: Path  # a public leaderboard model's SQuAD v1.1 dev predictions (.json.gz)

    def shared(self) -> list[Path]:
        return [self.tok, self.shards, self.run, self.other_tok, self.other_shards, self.tokenizer.parent]


@pytest.fixture(scope="module")
def r(tmp_path_factory: pytest.TempPathFactory, small_corpus: list[Path], tokenizer_json: Path) -> Inputs:
    from spanbert_cli.cli import main
    from spanbert_cli.shards.pack import ShardConfig, shard
    from spanbert_cli.text.tokenize import TokenizeConfig, tokenize

    root = tmp_path_factory.mktemp("bad-inputs")
    tok = tokenize(
        [str(f) for f in small_corpus],
        TokenizeConfig(tokenizer=str(tokenizer_json), workers=1),
        out=root / "tok",
    ).artifact.path
    shards = shard([str(tok)], ShardConfig(max_seq_len=64, valid_docs=3), out=root / "shards").artifact.path
    run = root / "run"
    args = ["pretrain", shards, "--out", run, "--model", "tiny", "--max-steps", "2", "--batch-size", "8"]
    args += ["--warmup-steps", "1", "--eval-every", "-1", "--save-every", "2", "--num-workers", "0"]
    assert main([str(a) for a in [*args, "--device", "cpu", "--quiet"]]) == 0
    other = CORPUS / "state_union" / "1950-Truman.txt"
    other_tok = tokenize([str(other)], TokenizeConfig(vocab_size=500, workers=1), out=root / "other-tok")
    other_shards = shard(
        [str(other_tok.artifact.path)], ShardConfig(max_seq_len=64, valid_docs=1), out=root / "other-shards"
    )
    return Inputs(
        corpus=small_corpus[-1],
        tokenizer=tokenizer_json,
        tok=tok,
        shards=shards,
        run=run,
        other_shards=other_shards.artifact.path,
        other_tok=other_tok.artifact.path,
        squad_train=BUNDLED_SQUAD / "train-sample.json",
        squad_dev=BUNDLED_SQUAD / "dev-sample.json",
        predictions=SQUAD / "predictions" / "v1.1-bert-ensemble.json.gz",
    )


# --------------------------------------------------------------------------------------------------
# the table


Built = tuple[Sequence[Any], Path | None]


@dataclass(frozen=True)
class Case:
    id: str  # <command>-<what is wrong>
    build: Callable[[Path, Inputs], Built]
    code: int
    fragment: str  # in the one line; {tmp} and {out} are replaced by the paths
    cls: str  # the class of bad input (see CLASSES)
    xfail: str | None = None  # the product's fault, when the row documents one not fixed yet
    no_gpu: bool = False  # the row needs a machine without a CUDA GPU

    @property
    def command(self) -> str:
        return max((c for c in COMMANDS if self.id.startswith(c.replace(" ", "-") + "-")), key=len)


CLASSES = {
    "missing": "missing or nonexistent paths",
    "kind": "the wrong kind of artifact or file",
    "file-dir": "a file where a directory is expected, or the other way round",
    "empty": "empty inputs",
    "encoding": "invalid UTF-8, NUL bytes",
    "jsonl": "JSONL lines that are not JSON, lack the text field or hold no string",
    "compressed": "corrupt and truncated .zst / .gz",
    "option": "out-of-range and malformed option values, conflicting options",
    "tampered": "tampered artifacts and malformed manifests",
    "squad": "SQuAD files that are not JSON, lack fields or are another version",
    "predictions": "malformed predictions and no-answer files for eval squad --predictions",
    "recipe": "malformed recipes and --set overrides",
    "out": "an --out that is a file, the user's directory (with and without --force), inside the input, "
    "another artifact",
}


def write(t: Path, name: str, data: str | bytes) -> Path:
    p = t / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        p.write_text(data, encoding="utf-8")
    return p


def user_dir(t: Path, name: str = "mine") -> Path:
    """A directory of the user's own, not a spanbert artifact."""
    d = t / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "notes.txt").write_text("my notes, not spanbert's\n")
    return d


def empty_dir(t: Path, name: str = "empty") -> Path:
    d = t / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def copy(t: Path, src: Path, name: str) -> Path:
    return Path(shutil.copytree(src, t / name))


def edit_manifest(t: Path, src: Path, name: str, edit: Callable[[dict], Any]) -> Path:
    d = copy(t, src, name)
    m = json.loads((d / "manifest.json").read_text())
    edit(m)
    (d / "manifest.json").write_text(json.dumps(m, indent=2))
    return d


def truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


def tampered(t: Path, src: Path, name: str, change: Callable[[Path], Any]) -> Path:
    d = copy(t, src, name)
    change(d)
    return d


def drop_files(pattern: str) -> Callable[[dict], None]:
    def edit(m: dict) -> None:
        m["files"] = [f for f in m["files"] if pattern not in f["path"]]

    return edit


def set_key(key: str, value: Any) -> Callable[[dict], None]:
    def edit(m: dict) -> None:
        m[key] = value

    return edit


def set_file_field(field: str, value: Any) -> Callable[[dict], None]:
    def edit(m: dict) -> None:
        m["files"][0][field] = value

    return edit


def corpus_dir(t: Path) -> Path:
    """A corpus directory of the user's: one real speech."""
    d = empty_dir(t, "corpus")
    shutil.copy(CORPUS / "state_union" / "2006-GWBush.txt", d)
    return d


def checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").iterdir())[-1]


def zst(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def squad_obj(r: Inputs) -> dict:
    return json.loads(r.squad_dev.read_text(encoding="utf-8"))


def squad_edit(t: Path, r: Inputs, name: str, edit: Callable[[dict], Any]) -> Path:
    obj = squad_obj(r)
    edit(obj)
    return write(t, name, json.dumps(obj))


def first_question(obj: dict) -> dict:
    return obj["data"][0]["paragraphs"][0]["qas"][0]


def dev_ids(r: Inputs) -> list[str]:
    return [q["id"] for a in squad_obj(r)["data"] for p in a["paragraphs"] for q in p["qas"]]


def recipe(r: Inputs, *, name: str = "bad", corpus: str | None = None, extra: str = "") -> str:
    return (
        f'[recipe]\nname = "{name}"\ncorpus = ["{corpus or r.corpus}"]\n\n'
        "[tokenize]\nvocab_size = 400\nworkers = 1\n\n[shard]\nmax_seq_len = 64\n\n"
        '[pretrain]\nmodel = "tiny"\nmax_steps = 1\nbatch_size = 4\nnum_workers = 0\ndevice = "cpu"\n'
        f"{extra}"
    )


def tokenize(t: Path, r: Inputs, *inputs: Any, opts: Sequence[Any] = (), out: Path | None = None) -> Built:
    out = out or t / "out"
    return ["tokenize", *inputs, "--out", out, "--tokenizer", r.tokenizer, "--workers", "1", *opts], out


def untrained(t: Path, r: Inputs, *opts: Any) -> Built:
    """`spanbert tokenize` of the real corpus file without the real tokenizer."""
    return ["tokenize", r.corpus, "--out", t / "out", "--workers", "1", *opts], t / "out"


def shard(t: Path, *inputs: Any, opts: Sequence[Any] = (), out: Path | None = None) -> Built:
    out = out or t / "out"
    return ["shard", *inputs, "--out", out, *opts], out


TINY = ["--model", "tiny", "--max-steps", "1", "--batch-size", "8", "--num-workers", "0"]


def pretrain(t: Path, shards: Any, *opts: Any, out: Path | None = None, model: bool = True) -> Built:
    out = out or t / "run"
    tiny = TINY if model else TINY[2:]
    return ["pretrain", shards, "--out", out, *tiny, "--device", "cpu", *opts], out


def export(t: Path, run: Any, *opts: Any, out: Path | None = None) -> Built:
    out = out or t / "hf"
    return ["export", run, "--out", out, *opts], out


QUICK = ["--max-train-examples", "8", "--max-eval-examples", "8", "--max-seq-length", "64"]
QUICK += ["--doc-stride", "32", "--max-query-length", "16", "--batch-size", "4", "--max-steps", "1"]


def squad(
    t: Path,
    r: Inputs,
    *opts: Any,
    run: Any = None,
    train: Any = None,
    dev: Any = None,
    out: Path | None = None,
) -> Built:
    out = out or t / "eval"
    run = r.run if run is None else run
    train = r.squad_train if train is None else train
    dev = r.squad_dev if dev is None else dev
    args = ["eval", "squad", run, "--train", train, "--dev", dev, "--out", out, *QUICK, "--device", "cpu"]
    return [*args, *opts], out


def score(r: Inputs, predictions: Any, *opts: Any, data: Any = None) -> Built:
    return ["eval", "squad", "--predictions", predictions, "--data", data or r.squad_dev, *opts], None


def mlm(
    t: Path, r: Inputs, *opts: Any, run: Any = None, shards: Any = None, out: Path | None = None
) -> Built:
    out = out or t / "mlm"
    run = r.run if run is None else run
    shards = r.shards if shards is None else shards
    args = ["eval", "mlm", run, shards, "--out", out, "--num-workers", "0", "--batch-size", "4"]
    return [*args, "--device", "cpu", *opts], out


def run_recipe(
    t: Path, text: str | bytes, *opts: Any, out: Path | None = None, name: str = "r.toml"
) -> Built:
    out = out or t / "pipeline"
    return ["run", write(t, name, text), "--out", out, *opts], out


def preview(shards: Any, *opts: Any) -> Built:
    return ["mask-preview", shards, *opts], None


def tool(command: str, path: Any, *opts: Any) -> Built:
    return [command, path, *opts], None


CASES: list[Case] = [
    # ---------------------------------------------------------------------------------------- tokenize
    Case("tokenize-missing-file", lambda t, r: tokenize(t, r, t / "nope.txt"), 1, "nope.txt", "missing"),
    Case(
        "tokenize-glob-matches-nothing",
        lambda t, r: tokenize(t, r, t / "nope-*.txt"),
        1,
        "matches no file",
        "missing",
    ),
    Case(
        "tokenize-tokenizer-missing",
        lambda t, r: untrained(t, r, "--tokenizer", t / "tok.json"),
        1,
        "tokenizer file not found",
        "missing",
    ),
    Case(
        "tokenize-directory-without-corpus-files",
        lambda t, r: tokenize(t, r, empty_dir(t)),
        1,
        "no corpus files found",
        "empty",
    ),
    Case(
        "tokenize-empty-file", lambda t, r: tokenize(t, r, write(t, "e.txt", "")), 1, "no documents", "empty"
    ),
    Case(
        "tokenize-whitespace-only",
        lambda t, r: tokenize(t, r, write(t, "w.txt", " \n\n\t\n")),
        1,
        "no documents",
        "empty",
    ),
    Case(
        "tokenize-empty-jsonl",
        lambda t, r: tokenize(t, r, write(t, "e.jsonl", "")),
        1,
        "e.jsonl: no documents",
        "empty",
    ),
    Case("tokenize-cp1252-file", lambda t, r: tokenize(t, r, CP1252), 1, "invalid UTF-8", "encoding"),
    Case(
        "tokenize-invalid-utf8-in-jsonl",
        lambda t, r: tokenize(t, r, write(t, "c.jsonl", b'{"text": "caf\xe9"}\n')),
        1,
        "c.jsonl: invalid UTF-8",
        "encoding",
    ),
    Case(
        "tokenize-invalid-utf8-in-zst",
        lambda t, r: tokenize(t, r, write(t, "c.txt.zst", zst(b"caf\xe9 au lait\n"))),
        1,
        "c.txt.zst: invalid UTF-8",
        "encoding",
    ),
    Case(
        "tokenize-nul-byte",
        lambda t, r: tokenize(t, r, write(t, "n.txt", b"hello\x00world\n")),
        1,
        "NUL byte",
        "encoding",
    ),
    Case(
        "tokenize-jsonl-line-not-json",
        lambda t, r: tokenize(t, r, write(t, "x.jsonl", '{"text": "fine"}\nnot json\n')),
        1,
        "x.jsonl:2: not valid JSON",
        "jsonl",
    ),
    Case(
        "tokenize-jsonl-without-text-field",
        lambda t, r: tokenize(t, r, write(t, "x.jsonl", '{"body": "words"}\n')),
        1,
        "no 'text' field",
        "jsonl",
    ),
    Case(
        "tokenize-jsonl-other-text-field",
        lambda t, r: tokenize(
            t, r, write(t, "x.jsonl", '{"text": "words"}\n'), opts=["--text-field", "body"]
        ),
        1,
        "no 'body' field",
        "jsonl",
    ),
    Case(
        "tokenize-jsonl-text-not-a-string",
        lambda t, r: tokenize(t, r, write(t, "x.jsonl", '{"text": 5}\n')),
        1,
        "'text' is int",
        "jsonl",
    ),
    Case(
        "tokenize-jsonl-record-not-an-object",
        lambda t, r: tokenize(t, r, write(t, "x.jsonl", '{"text": "fine"}\n[1, 2]\n')),
        1,
        "x.jsonl:2",
        "jsonl",
    ),
    Case(
        "tokenize-corrupt-zst",
        lambda t, r: tokenize(t, r, write(t, "c.txt.zst", b"this is not zstd")),
        1,
        "corrupt zstd",
        "compressed",
    ),
    Case(
        "tokenize-truncated-zst",
        lambda t, r: tokenize(t, r, write(t, "c.txt.zst", zst(r.corpus.read_bytes())[:-100])),
        1,
        "truncated zstd",
        "compressed",
    ),
    Case(
        "tokenize-part-zero",
        lambda t, r: tokenize(t, r, r.corpus, opts=["--part", "0/3"]),
        2,
        "--part 0/3",
        "option",
    ),
    Case(
        "tokenize-part-past-n",
        lambda t, r: tokenize(t, r, r.corpus, opts=["--part", "4/3"]),
        2,
        "--part 4/3",
        "option",
    ),
    Case(
        "tokenize-part-malformed",
        lambda t, r: tokenize(t, r, r.corpus, opts=["--part", "half"]),
        2,
        "expected i/N",
        "option",
    ),
    Case(
        "tokenize-vocab-size-negative",
        lambda t, r: untrained(t, r, "--vocab-size", "-5"),
        2,
        "--vocab-size",
        "option",
    ),
    Case(
        "tokenize-docs-unknown",
        lambda t, r: tokenize(t, r, r.corpus, opts=["--docs", "paragraph"]),
        2,
        "--docs",
        "option",
    ),
    Case(
        "tokenize-errors-unknown",
        lambda t, r: tokenize(t, r, r.corpus, opts=["--errors", "ignore"]),
        2,
        "--errors",
        "option",
    ),
    Case(
        "tokenize-max-file-size-zero",
        lambda t, r: tokenize(t, r, r.corpus, opts=["--max-file-size", "0"]),
        2,
        "--max-file-size",
        "option",
    ),
    Case(
        "tokenize-workers-negative",
        lambda t, r: tokenize(t, r, r.corpus, opts=["--workers", "-2"]),
        2,
        "--workers",
        "option",
    ),
    Case(
        "tokenize-vocab-size-not-a-number",
        lambda t, r: tokenize(t, r, r.corpus, opts=["--vocab-size", "many"]),
        2,
        "--vocab-size",
        "option",
    ),
    Case(
        "tokenize-no-corpus-argument",
        lambda t, r: (["tokenize", "--out", t / "out", "--tokenizer", r.tokenizer], t / "out"),
        2,
        "corpus",
        "option",
    ),
    Case(
        "tokenize-tokenizer-not-json",
        lambda t, r: untrained(t, r, "--tokenizer", write(t, "tokenizer.json", '{"model": ')),
        1,
        "unreadable tokenizer",
        "kind",
    ),
    Case(
        "tokenize-tokenizer-is-plain-text",
        lambda t, r: untrained(t, r, "--tokenizer", r.corpus),
        1,
        "[UNK]",
        "kind",
    ),
    Case(
        "tokenize-tokenizer-directory-without-one",
        lambda t, r: untrained(t, r, "--tokenizer", empty_dir(t)),
        1,
        "no tokenizer.json or vocab.txt",
        "file-dir",
    ),
    Case(
        "tokenize-out-is-a-file",
        lambda t, r: tokenize(t, r, r.corpus, out=write(t, "afile", "mine")),
        1,
        "is a file",
        "out",
    ),
    Case(
        "tokenize-out-user-dir",
        lambda t, r: tokenize(t, r, r.corpus, out=user_dir(t)),
        1,
        "not a spanbert artifact",
        "out",
    ),
    Case(
        "tokenize-out-user-dir-force",
        lambda t, r: tokenize(t, r, r.corpus, opts=["--force"], out=user_dir(t)),
        1,
        "never replaces files it did not write",
        "out",
    ),
    Case(
        "tokenize-out-inside-input",
        lambda t, r: tokenize(t, r, corpus_dir(t), out=t / "corpus" / "tok"),
        2,
        "inside the input",
        "out",
    ),
    Case(
        "tokenize-out-is-the-input",
        lambda t, r: tokenize(t, r, write(t, "c.txt", r.corpus.read_text()), out=t / "c.txt"),
        2,
        "the output is the input",
        "out",
    ),
    # ------------------------------------------------------------------------------------------- shard
    Case("shard-missing-artifact", lambda t, r: shard(t, t / "nope"), 1, "no such artifact", "missing"),
    Case(
        "shard-nothing-in-workspace",
        lambda t, r: (["shard", "--workspace", empty_dir(t, "ws"), "--out", t / "out"], t / "out"),
        2,
        "no tokenize artifact",
        "missing",
    ),
    Case(
        "shard-wrong-kind-shards", lambda t, r: shard(t, r.shards), 1, "expected spanbert/tokenized", "kind"
    ),
    Case("shard-wrong-kind-run", lambda t, r: shard(t, r.run), 1, "is a spanbert/run artifact", "kind"),
    Case(
        "shard-manifest-file-not-directory",
        lambda t, r: shard(t, r.tok / "manifest.json"),
        1,
        "it is a file",
        "file-dir",
    ),
    Case(
        "shard-directory-without-manifest",
        lambda t, r: shard(t, user_dir(t)),
        1,
        "no manifest.json",
        "kind",
    ),
    Case(
        "shard-different-tokenizers",
        lambda t, r: shard(t, r.tok, r.other_tok),
        1,
        "different tokenizers",
        "kind",
    ),
    Case(
        "shard-same-artifact-twice",
        lambda t, r: shard(t, r.tok, r.tok),
        2,
        "same tokenize artifact",
        "option",
    ),
    Case(
        "shard-max-seq-len-4",
        lambda t, r: shard(t, r.tok, opts=["--max-seq-len", "4"]),
        2,
        "--max-seq-len",
        "option",
    ),
    Case(
        "shard-valid-fraction-2",
        lambda t, r: shard(t, r.tok, opts=["--valid-fraction", "2"]),
        2,
        "--valid-fraction",
        "option",
    ),
    Case(
        "shard-valid-docs-negative",
        lambda t, r: shard(t, r.tok, opts=["--valid-docs", "-1"]),
        2,
        "--valid-docs",
        "option",
    ),
    Case(
        "shard-valid-docs-every-document",
        lambda t, r: shard(t, r.tok, opts=["--valid-docs", "100000"]),
        2,
        "train split empty",
        "option",
    ),
    Case(
        "shard-shard-size-negative",
        lambda t, r: shard(t, r.tok, opts=["--shard-size", "-3"]),
        2,
        "--shard-size",
        "option",
    ),
    Case(
        "shard-compression-unknown",
        lambda t, r: shard(t, r.tok, opts=["--compression", "gzip"]),
        2,
        "--compression",
        "option",
    ),
    Case(
        "shard-truncated-data-file",
        lambda t, r: shard(t, tampered(t, r.tok, "tok", lambda d: truncate(d / "data" / "part-00000.arrow"))),
        1,
        "tampered or truncated",
        "tampered",
    ),
    Case(
        "shard-data-file-missing",
        lambda t, r: shard(
            t, tampered(t, r.tok, "tok", lambda d: (d / "data" / "part-00000.arrow").unlink())
        ),
        1,
        "data/part-00000.arrow listed in the manifest is missing",
        "tampered",
    ),
    Case(
        "shard-unlisted-data-file",
        lambda t, r: shard(t, edit_manifest(t, r.tok, "tampered-tok", drop_files(".arrow"))),
        1,
        "manifest",
        "tampered",
    ),
    Case(
        "shard-manifest-not-json",
        lambda t, r: shard(t, tampered(t, r.tok, "tok", lambda d: (d / "manifest.json").write_text("{oops"))),
        1,
        "unreadable manifest",
        "tampered",
    ),
    Case(
        "shard-manifest-empty",
        lambda t, r: shard(t, tampered(t, r.tok, "tok", lambda d: (d / "manifest.json").write_text(""))),
        1,
        "unreadable manifest",
        "tampered",
    ),
    Case(
        "shard-manifest-a-list",
        lambda t, r: shard(
            t, tampered(t, r.tok, "tok", lambda d: (d / "manifest.json").write_text("[1, 2]"))
        ),
        1,
        "must be a JSON object",
        "tampered",
    ),
    Case(
        "shard-manifest-files-not-a-list",
        lambda t, r: shard(t, edit_manifest(t, r.tok, "tok", set_key("files", "all of them"))),
        1,
        "files must be a list",
        "tampered",
    ),
    Case(
        "shard-manifest-file-size-not-a-number",
        lambda t, r: shard(t, edit_manifest(t, r.tok, "tok", set_file_field("bytes", "many"))),
        1,
        "files[0].bytes must be int",
        "tampered",
    ),
    Case(
        "shard-manifest-entry-without-sha256",
        lambda t, r: shard(t, edit_manifest(t, r.tok, "tok", lambda m: m["files"][0].pop("sha256"))),
        1,
        "sha256 is missing",
        "tampered",
    ),
    Case(
        "shard-manifest-schema-version-0",
        lambda t, r: shard(t, edit_manifest(t, r.tok, "tok", set_key("schema_version", 0))),
        1,
        "schema_version must be an integer >= 1",
        "tampered",
    ),
    Case(
        "shard-manifest-schema-version-a-string",
        lambda t, r: shard(t, edit_manifest(t, r.tok, "tok", set_key("schema_version", "1"))),
        1,
        "schema_version must be an integer",
        "tampered",
    ),
    Case(
        "shard-manifest-schema-version-newer",
        lambda t, r: shard(t, edit_manifest(t, r.tok, "tok", set_key("schema_version", 99))),
        1,
        "upgrade spanbert",
        "tampered",
    ),
    Case(
        "shard-manifest-path-outside",
        lambda t, r: shard(t, edit_manifest(t, r.tok, "tok", set_file_field("path", "../x"))),
        1,
        "'../x' is not a relative path inside the artifact",
        "tampered",
    ),
    Case(
        "shard-manifest-absolute-path",
        lambda t, r: shard(t, edit_manifest(t, r.tok, "tok", set_file_field("path", "/etc/passwd"))),
        1,
        "not a relative path",
        "tampered",
    ),
    Case(
        "shard-out-is-a-file", lambda t, r: shard(t, r.tok, out=write(t, "afile", "x")), 1, "is a file", "out"
    ),
    Case(
        "shard-out-user-dir-force",
        lambda t, r: shard(t, r.tok, opts=["--force"], out=user_dir(t)),
        1,
        "not a spanbert artifact",
        "out",
    ),
    Case(
        "shard-out-inside-input",
        lambda t, r: shard(t, copy(t, r.tok, "tok"), out=t / "tok" / "shards"),
        2,
        "inside the input",
        "out",
    ),
    Case(
        "shard-out-holds-another-artifact",
        lambda t, r: shard(t, r.tok, opts=["--max-seq-len", "32"], out=copy(t, r.shards, "shards")),
        1,
        "--force",
        "out",
    ),
    # ------------------------------------------------------------------------------------ mask-preview
    Case("mask-preview-missing", lambda t, r: preview(t / "nope"), 1, "no such artifact", "missing"),
    Case(
        "mask-preview-nothing-in-workspace",
        lambda t, r: (["mask-preview", "--workspace", empty_dir(t, "ws")], None),
        2,
        "no shard artifact",
        "missing",
    ),
    Case("mask-preview-wrong-kind", lambda t, r: preview(r.tok), 1, "expected spanbert/shards", "kind"),
    Case(
        "mask-preview-manifest-file",
        lambda t, r: preview(r.shards / "manifest.json"),
        1,
        "it is a file",
        "file-dir",
    ),
    Case(
        "mask-preview-tokenizer-missing",
        lambda t, r: preview(tampered(t, r.shards, "shards", lambda d: (d / "tokenizer.json").unlink())),
        1,
        "tokenizer.json listed in the manifest is missing",
        "tampered",
    ),
    Case(
        "mask-preview-stats-not-an-object",
        lambda t, r: preview(edit_manifest(t, r.shards, "shards", set_key("stats", "x"))),
        1,
        "stats must be an object",
        "tampered",
    ),
    Case(
        "mask-preview-split-unknown", lambda t, r: preview(r.shards, "--split", "test"), 2, "'test'", "option"
    ),
    Case(
        "mask-preview-index-past-the-end",
        lambda t, r: preview(r.shards, "--index", "100000"),
        1,
        "past the end of the train split",
        "option",
    ),
    Case(
        "mask-preview-index-negative",
        lambda t, r: preview(r.shards, "--index", "-1"),
        2,
        "--index",
        "option",
    ),
    Case("mask-preview-num-negative", lambda t, r: preview(r.shards, "--num", "-1"), 2, "--num", "option"),
    Case(
        "mask-preview-stats-negative", lambda t, r: preview(r.shards, "--stats", "-2"), 2, "--stats", "option"
    ),
    Case(
        "mask-preview-span-len-0",
        lambda t, r: preview(r.shards, "--span-len", "0"),
        2,
        "--span-len",
        "option",
    ),
    Case(
        "mask-preview-mask-ratio-1.5",
        lambda t, r: preview(r.shards, "--mask-ratio", "1.5"),
        2,
        "--mask-ratio",
        "option",
    ),
    Case(
        "mask-preview-geometric-p-2",
        lambda t, r: preview(r.shards, "--geometric-p", "2"),
        2,
        "--geometric-p",
        "option",
    ),
    Case(
        "mask-preview-max-span-len-0",
        lambda t, r: preview(r.shards, "--max-span-len", "0"),
        2,
        "--max-span-len",
        "option",
    ),
    Case(
        "mask-preview-scheme-unknown",
        lambda t, r: preview(r.shards, "--scheme", "foo"),
        2,
        "--scheme",
        "option",
    ),
    Case(
        "mask-preview-epoch-negative",
        lambda t, r: preview(r.shards, "--epoch", "-1"),
        2,
        "epoch -1",
        "option",
    ),
    Case(
        "mask-preview-num-not-a-number",
        lambda t, r: preview(r.shards, "--num", "abc"),
        2,
        "--num",
        "option",
    ),
    # ---------------------------------------------------------------------------------------- pretrain
    Case("pretrain-missing-shards", lambda t, r: pretrain(t, t / "nope"), 1, "no such artifact", "missing"),
    Case(
        "pretrain-nothing-in-workspace",
        lambda t, r: (["pretrain", "--workspace", empty_dir(t, "ws"), "--out", t / "run", *TINY], t / "run"),
        2,
        "no shard artifact",
        "missing",
    ),
    Case(
        "pretrain-wrong-kind-tokenized",
        lambda t, r: pretrain(t, r.tok),
        1,
        "expected spanbert/shards",
        "kind",
    ),
    Case("pretrain-wrong-kind-run", lambda t, r: pretrain(t, r.run), 1, "is a spanbert/run artifact", "kind"),
    Case(
        "pretrain-init-from-wrong-kind",
        lambda t, r: pretrain(t, r.shards, "--init-from", r.shards, model=False),
        1,
        "not a run, checkpoint or exported model",
        "kind",
    ),
    Case(
        "pretrain-init-from-empty-dir",
        lambda t, r: pretrain(t, r.shards, "--init-from", empty_dir(t), model=False),
        1,
        "no config.json",
        "empty",
    ),
    Case(
        "pretrain-resume-from-not-a-checkpoint",
        lambda t, r: pretrain(t, r.shards, "--resume-from", r.shards),
        2,
        "not a checkpoint directory",
        "kind",
    ),
    Case(
        "pretrain-batch-not-divisible-by-micro-batch",
        lambda t, r: pretrain(t, r.shards, "--micro-batch-size", "3"),
        2,
        "--micro-batch-size 3",
        "option",
    ),
    Case(
        "pretrain-batch-not-divisible-by-procs",
        lambda t, r: pretrain(t, r.shards, "--procs", "2", "--batch-size", "7"),
        2,
        "not divisible by the 2 processes",
        "option",
    ),
    Case("pretrain-procs-0", lambda t, r: pretrain(t, r.shards, "--procs", "0"), 2, "--procs", "option"),
    Case(
        "pretrain-precision-unknown",
        lambda t, r: pretrain(t, r.shards, "--precision", "fp8"),
        2,
        "--precision",
        "option",
    ),
    Case(
        "pretrain-device-unknown",
        lambda t, r: pretrain(t, r.shards, "--device", "tpu"),
        2,
        "--device",
        "option",
    ),
    Case(
        "pretrain-device-cuda-without-gpu",
        lambda t, r: pretrain(t, r.shards, "--device", "cuda"),
        2,
        "--device cuda",
        "option",
        no_gpu=True,
    ),
    Case(
        "pretrain-gpus-without-gpu",
        lambda t, r: pretrain(t, r.shards, "--device", "auto", "--gpus", "2"),
        2,
        "--gpus 2",
        "option",
        no_gpu=True,
    ),
    Case(
        "pretrain-span-len-0",
        lambda t, r: pretrain(t, r.shards, "--span-len", "0"),
        2,
        "--span-len",
        "option",
    ),
    Case(
        "pretrain-mask-ratio-1.5",
        lambda t, r: pretrain(t, r.shards, "--mask-ratio", "1.5"),
        2,
        "--mask-ratio",
        "option",
    ),
    Case(
        "pretrain-model-unknown",
        lambda t, r: pretrain(t, r.shards, "--model", "huge"),
        2,
        "--model",
        "option",
    ),
    Case("pretrain-lr-negative", lambda t, r: pretrain(t, r.shards, "--lr", "-1"), 2, "--lr", "option"),
    Case(
        "pretrain-max-steps-0",
        lambda t, r: pretrain(t, r.shards, "--max-steps", "0"),
        2,
        "--max-steps",
        "option",
    ),
    Case(
        "pretrain-model-and-model-config",
        lambda t, r: pretrain(t, r.shards, "--model-config", write(t, "c.json", "{}")),
        2,
        "not both",
        "option",
    ),
    Case(
        "pretrain-model-config-missing",
        lambda t, r: pretrain(t, r.shards, "--model-config", t / "nope.json", model=False),
        2,
        "nope.json",
        "missing",
    ),
    Case(
        "pretrain-model-config-not-json",
        lambda t, r: pretrain(t, r.shards, "--model-config", write(t, "c.json", "{bad"), model=False),
        2,
        "not valid JSON",
        "kind",
    ),
    Case(
        "pretrain-model-config-incomplete",
        lambda t, r: pretrain(
            t, r.shards, "--model-config", write(t, "partial.json", '{"hidden_size": 64}'), model=False
        ),
        2,
        "partial.json",
        "kind",
    ),
    Case(
        "pretrain-unknown-option",
        lambda t, r: pretrain(t, r.shards, "--max-step", "3"),
        2,
        "--max-step",
        "option",
    ),
    Case(
        "pretrain-truncated-shard-file",
        lambda t, r: pretrain(
            t, tampered(t, r.shards, "shards", lambda d: truncate(d / "train" / "part-00000.arrow", 100))
        ),
        1,
        "tampered or truncated",
        "tampered",
    ),
    Case(
        "pretrain-shards-schema-newer",
        lambda t, r: pretrain(t, edit_manifest(t, r.shards, "shards", set_key("schema_version", 2))),
        1,
        "newer than this spanbert supports",
        "tampered",
    ),
    Case(
        "pretrain-unlisted-shard-file",
        lambda t, r: pretrain(t, edit_manifest(t, r.shards, "tampered-shards", drop_files("train/"))),
        1,
        "manifest",
        "tampered",
    ),
    Case(
        "pretrain-out-is-a-file",
        lambda t, r: pretrain(t, r.shards, out=write(t, "afile", "x")),
        1,
        "is a file",
        "out",
    ),
    Case(
        "pretrain-out-user-dir-force",
        lambda t, r: pretrain(t, r.shards, "--force", out=user_dir(t)),
        1,
        "not a spanbert artifact",
        "out",
    ),
    Case(
        "pretrain-out-inside-input",
        lambda t, r: pretrain(t, copy(t, r.shards, "shards"), out=t / "shards" / "run"),
        2,
        "inside the input",
        "out",
    ),
    Case(
        "pretrain-out-holds-another-artifact",
        lambda t, r: pretrain(t, r.shards, out=copy(t, r.tok, "tok")),
        1,
        "holds a spanbert/tokenized artifact",
        "out",
    ),
    # ------------------------------------------------------------------------------------------ export
    Case("export-missing", lambda t, r: export(t, t / "nope"), 1, "no such directory", "missing"),
    Case("export-wrong-kind-shards", lambda t, r: export(t, r.shards), 1, "not a run, checkpoint", "kind"),
    Case("export-wrong-kind-tokenized", lambda t, r: export(t, r.tok), 1, "spanbert/tokenized", "kind"),
    Case(
        "export-an-exported-model",
        lambda t, r: export(t, r.run / "hf"),
        2,
        "already an exported model",
        "kind",
    ),
    Case("export-user-dir", lambda t, r: export(t, user_dir(t, "notarun")), 1, "no config.json", "kind"),
    Case("export-a-file", lambda t, r: export(t, r.run / "manifest.json"), 1, "not a directory", "file-dir"),
    Case("export-empty-dir", lambda t, r: export(t, empty_dir(t)), 1, "not a spanbert run", "empty"),
    Case(
        "export-step-absent",
        lambda t, r: export(t, r.run, "--step", "99"),
        2,
        "no checkpoint of step 99",
        "option",
    ),
    Case(
        "export-run-without-checkpoints",
        lambda t, r: export(t, tampered(t, r.run, "run", lambda d: shutil.rmtree(checkpoint(d)))),
        1,
        "no checkpoint",
        "tampered",
    ),
    Case(
        "export-weights-missing",
        lambda t, r: export(
            t, tampered(t, r.run, "run", lambda d: (checkpoint(d) / "model.safetensors").unlink())
        ),
        1,
        "model.safetensors is missing",
        "tampered",
    ),
    Case(
        "export-weights-truncated",
        lambda t, r: export(
            t, tampered(t, r.run, "run", lambda d: truncate(checkpoint(d) / "model.safetensors", 1000))
        ),
        1,
        "corrupt checkpoint",
        "tampered",
    ),
    Case(
        "export-checkpoint-json-not-json",
        lambda t, r: export(
            t, tampered(t, r.run, "run", lambda d: (checkpoint(d) / "checkpoint.json").write_text("{x"))
        ),
        1,
        "checkpoint.json is unreadable",
        "tampered",
    ),
    Case(
        "export-out-is-a-file",
        lambda t, r: export(t, r.run, out=write(t, "afile", "x")),
        1,
        "is a file",
        "out",
    ),
    Case(
        "export-out-user-dir-force",
        lambda t, r: export(t, r.run, "--force", out=user_dir(t)),
        1,
        "not a spanbert artifact",
        "out",
    ),
    Case(
        "export-out-inside-input",
        lambda t, r: export(t, copy(t, r.run, "run"), out=t / "run" / "hf2"),
        2,
        "inside the input",
        "out",
    ),
    # -------------------------------------------------------------------------------------- eval squad
    Case(
        "eval-squad-run-missing",
        lambda t, r: squad(t, r, run=t / "nope"),
        1,
        "nope: no such directory",
        "missing",
    ),
    Case(
        "eval-squad-nothing-in-workspace",
        lambda t, r: (["eval", "squad", "--workspace", empty_dir(t, "ws")], None),
        2,
        "no pretrain run",
        "missing",
    ),
    Case(
        "eval-squad-dev-missing",
        lambda t, r: squad(t, r, dev=t / "dev.json"),
        1,
        "SQuAD file not found",
        "missing",
    ),
    Case(
        "eval-squad-wrong-kind",
        lambda t, r: squad(t, r, run=r.shards),
        1,
        "is a spanbert/shards artifact",
        "kind",
    ),
    Case(
        "eval-squad-dev-is-a-directory",
        lambda t, r: squad(t, r, dev=empty_dir(t)),
        1,
        "is a directory; name a SQuAD file",
        "file-dir",
    ),
    Case(
        "eval-squad-train-not-json",
        lambda t, r: squad(t, r, train=write(t, "train.json", '{"version": "1.1", "data": [')),
        1,
        "train.json: not valid JSON",
        "squad",
    ),
    Case(
        "eval-squad-train-no-questions",
        lambda t, r: squad(t, r, train=write(t, "train.json", '{"version": "1.1", "data": []}')),
        1,
        "no questions",
        "empty",
    ),
    Case(
        "eval-squad-dev-without-data",
        lambda t, r: squad(t, r, dev=write(t, "dev.json", '{"version": "1.1"}')),
        1,
        "not SQuAD JSON",
        "squad",
    ),
    Case(
        "eval-squad-dev-paragraph-without-context",
        lambda t, r: squad(
            t, r, dev=squad_edit(t, r, "dev.json", lambda o: o["data"][0]["paragraphs"][0].pop("context"))
        ),
        1,
        "data[0].paragraphs[0]: 'context'",
        "squad",
    ),
    Case(
        "eval-squad-train-question-without-text",
        lambda t, r: squad(
            t, r, train=squad_edit(t, r, "train.json", lambda o: first_question(o).pop("question"))
        ),
        1,
        "qas[0]: 'question'",
        "squad",
    ),
    Case(
        "eval-squad-dev-answers-not-a-list",
        lambda t, r: squad(
            t, r, dev=squad_edit(t, r, "dev.json", lambda o: first_question(o).update(answers="x"))
        ),
        1,
        "'answers' must be a list",
        "squad",
    ),
    Case(
        "eval-squad-dev-list-of-numbers",
        lambda t, r: squad(t, r, dev=write(t, "dev.json", "[1, 2, 3]")),
        1,
        "a row must be an object",
        "squad",
    ),
    Case(
        "eval-squad-dev-unknown-version",
        lambda t, r: squad(t, r, dev=squad_edit(t, r, "dev.json", lambda o: o.update(version="3.0"))),
        1,
        "version",
        "squad",
    ),
    Case(
        "eval-squad-dev-truncated-gz",
        lambda t, r: squad(t, r, dev=write(t, "dev.json.gz", gzip.compress(r.squad_dev.read_bytes())[:-200])),
        1,
        "unreadable SQuAD file",
        "compressed",
    ),
    Case(
        "eval-squad-version-unknown", lambda t, r: squad(t, r, "--version", "3.0"), 2, "--version", "option"
    ),
    Case(
        "eval-squad-doc-stride-0", lambda t, r: squad(t, r, "--doc-stride", "0"), 2, "--doc-stride", "option"
    ),
    Case(
        "eval-squad-max-seq-length-4",
        lambda t, r: squad(t, r, "--max-seq-length", "4"),
        2,
        "--max-seq-length",
        "option",
    ),
    Case(
        "eval-squad-batch-not-divisible",
        lambda t, r: squad(t, r, "--batch-size", "6", "--micro-batch-size", "4"),
        2,
        "--micro-batch-size 4",
        "option",
    ),
    Case(
        "eval-squad-precision-unknown",
        lambda t, r: squad(t, r, "--precision", "fp8"),
        2,
        "--precision",
        "option",
    ),
    Case("eval-squad-procs-0", lambda t, r: squad(t, r, "--procs", "0"), 2, "--procs", "option"),
    Case(
        "eval-squad-gpus-with-device-cpu",
        lambda t, r: squad(t, r, "--gpus", "1"),
        2,
        "--gpus",
        "option",
    ),
    Case(
        "eval-squad-data-without-predictions",
        lambda t, r: (["eval", "squad", r.run, "--data", r.squad_dev], None),
        2,
        "--data goes with --predictions",
        "option",
    ),
    Case(
        "eval-squad-out-is-a-file",
        lambda t, r: squad(t, r, out=write(t, "afile", "x")),
        1,
        "is a file",
        "out",
    ),
    Case(
        "eval-squad-out-user-dir-force",
        lambda t, r: squad(t, r, "--force", out=user_dir(t)),
        1,
        "not a spanbert artifact",
        "out",
    ),
    Case(
        "eval-squad-out-inside-input",
        lambda t, r: squad(t, r, run=copy(t, r.run, "run"), out=t / "run" / "eval"),
        2,
        "inside the input",
        "out",
    ),
    # scoring a predictions file
    Case(
        "eval-squad-predictions-missing",
        lambda t, r: score(r, t / "p.json"),
        1,
        "predictions file not found",
        "missing",
    ),
    Case(
        "eval-squad-predictions-directory",
        lambda t, r: score(r, empty_dir(t)),
        1,
        "is a directory; name a predictions file",
        "file-dir",
    ),
    Case(
        "eval-squad-predictions-a-list",
        lambda t, r: score(r, write(t, "p.json", '["a", "b"]')),
        1,
        "must be a JSON object",
        "predictions",
    ),
    Case(
        "eval-squad-predictions-answer-not-a-string",
        lambda t, r: score(r, write(t, "p.json", json.dumps({dev_ids(r)[0]: 5}))),
        1,
        "must be a string",
        "predictions",
    ),
    Case(
        "eval-squad-predictions-not-json",
        lambda t, r: score(r, write(t, "p.json", '{"a": ')),
        1,
        "p.json: not valid JSON",
        "predictions",
    ),
    Case(
        "eval-squad-predictions-empty",
        lambda t, r: score(r, write(t, "p.json", "")),
        1,
        "p.json: not valid JSON",
        "empty",
    ),
    Case(
        "eval-squad-predictions-invalid-utf8",
        lambda t, r: score(r, write(t, "p.json", b'{"a": "caf\xe9"}')),
        1,
        "not UTF-8",
        "encoding",
    ),
    Case(
        "eval-squad-predictions-truncated-gz",
        lambda t, r: score(r, write(t, "p.json.gz", r.predictions.read_bytes()[:-500])),
        1,
        "unreadable predictions file",
        "compressed",
    ),
    Case(
        "eval-squad-na-probs-not-numbers",
        lambda t, r: score(
            r, r.predictions, "--na-probs", write(t, "na.json", json.dumps({dev_ids(r)[0]: "high"}))
        ),
        1,
        "must be a finite number",
        "predictions",
    ),
    Case(
        "eval-squad-na-probs-missing",
        lambda t, r: score(r, r.predictions, "--na-probs", t / "na.json"),
        1,
        "no-answer probabilities file not found",
        "missing",
    ),
    Case(
        "eval-squad-predictions-data-not-json",
        lambda t, r: score(r, r.predictions, data=write(t, "dev.json", "{")),
        1,
        "dev.json: not valid JSON",
        "squad",
    ),
    Case(
        "eval-squad-predictions-without-data",
        lambda t, r: (["eval", "squad", "--predictions", r.predictions], None),
        2,
        "needs --data",
        "option",
    ),
    Case(
        "eval-squad-predictions-with-out",
        lambda t, r: score(r, r.predictions, "--out", t / "eval"),
        2,
        "drop --out",
        "option",
    ),
    # ---------------------------------------------------------------------------------------- eval mlm
    Case(
        "eval-mlm-run-missing",
        lambda t, r: mlm(t, r, run=t / "nope"),
        1,
        "nope: no such directory",
        "missing",
    ),
    Case(
        "eval-mlm-shards-missing", lambda t, r: mlm(t, r, shards=t / "nope"), 1, "no such artifact", "missing"
    ),
    Case("eval-mlm-run-wrong-kind", lambda t, r: mlm(t, r, run=r.shards), 1, "not a run, checkpoint", "kind"),
    Case(
        "eval-mlm-shards-wrong-kind",
        lambda t, r: mlm(t, r, shards=r.tok),
        1,
        "expected spanbert/shards",
        "kind",
    ),
    Case(
        "eval-mlm-shards-of-another-tokenizer",
        lambda t, r: mlm(t, r, shards=r.other_shards),
        1,
        "another tokenizer",
        "kind",
    ),
    Case(
        "eval-mlm-shards-a-file",
        lambda t, r: mlm(t, r, shards=r.shards / "manifest.json"),
        1,
        "it is a file",
        "file-dir",
    ),
    Case(
        "eval-mlm-truncated-valid-shard",
        lambda t, r: mlm(
            t, r, shards=tampered(t, r.shards, "shards", lambda d: truncate(d / "valid" / "part-00000.arrow"))
        ),
        1,
        "valid/part-00000.arrow",
        "tampered",
    ),
    Case("eval-mlm-split-unknown", lambda t, r: mlm(t, r, "--split", "test"), 2, "--split", "option"),
    Case(
        "eval-mlm-max-sequences-0",
        lambda t, r: mlm(t, r, "--max-sequences", "0"),
        2,
        "--max-sequences",
        "option",
    ),
    Case(
        "eval-mlm-mask-ratio-1.5", lambda t, r: mlm(t, r, "--mask-ratio", "1.5"), 2, "--mask-ratio", "option"
    ),
    Case(
        "eval-mlm-precision-unknown", lambda t, r: mlm(t, r, "--precision", "fp8"), 2, "--precision", "option"
    ),
    Case("eval-mlm-batch-size-0", lambda t, r: mlm(t, r, "--batch-size", "0"), 2, "--batch-size", "option"),
    Case(
        "eval-mlm-no-shards-argument",
        lambda t, r: (["eval", "mlm", r.run, "--out", t / "mlm"], t / "mlm"),
        2,
        "shards",
        "option",
    ),
    Case("eval-mlm-out-is-a-file", lambda t, r: mlm(t, r, out=write(t, "afile", "x")), 1, "is a file", "out"),
    Case(
        "eval-mlm-out-user-dir",
        lambda t, r: mlm(t, r, out=user_dir(t)),
        1,
        "not a spanbert artifact",
        "out",
    ),
    Case(
        "eval-mlm-out-inside-input",
        lambda t, r: mlm(t, r, shards=copy(t, r.shards, "shards"), out=t / "shards" / "mlm"),
        2,
        "inside the input",
        "out",
    ),
    # --------------------------------------------------------------------------------------------- run
    Case(
        "run-recipe-missing",
        lambda t, r: (["run", t / "nope.toml", "--out", t / "pipeline"], t / "pipeline"),
        2,
        "no such recipe file",
        "missing",
    ),
    Case(
        "run-recipe-is-a-directory",
        lambda t, r: (["run", empty_dir(t, "recipes"), "--out", t / "pipeline"], t / "pipeline"),
        2,
        "is a directory",
        "file-dir",
    ),
    Case("run-recipe-empty", lambda t, r: run_recipe(t, ""), 2, "recipe.corpus", "empty"),
    Case("run-toml-syntax-error", lambda t, r: run_recipe(t, 'name = "x\n'), 2, "not valid TOML", "recipe"),
    Case(
        "run-toml-not-utf8",
        lambda t, r: run_recipe(t, b"\xff\xfe[recipe]\n"),
        2,
        "not valid TOML",
        "encoding",
    ),
    Case(
        "run-unknown-section",
        lambda t, r: run_recipe(t, recipe(r, extra="\n[bogus]\nx = 1\n")),
        2,
        "bogus: unknown stage",
        "recipe",
    ),
    Case(
        "run-unknown-key",
        lambda t, r: run_recipe(t, recipe(r, extra="vocab_sise = 3\n")),
        2,
        "pretrain.vocab_sise: unknown key",
        "recipe",
    ),
    Case(
        "run-wrong-value-type",
        lambda t, r: run_recipe(t, recipe(r).replace("max_seq_len = 64", 'max_seq_len = "long"')),
        2,
        "shard.max_seq_len: expected int",
        "recipe",
    ),
    Case(
        "run-invalid-value",
        lambda t, r: run_recipe(t, recipe(r, extra="micro_batch_size = 3\n")),
        2,
        "--micro-batch-size 3",
        "recipe",
    ),
    Case(
        "run-procs-not-a-number",
        lambda t, r: run_recipe(t, recipe(r, extra="procs = 0\n")),
        2,
        "pretrain.procs: expected a number of processes",
        "recipe",
    ),
    Case(
        "run-gpus-and-procs",
        lambda t, r: run_recipe(t, recipe(r, extra="gpus = 2\nprocs = 2\n")),
        2,
        "pretrain: give gpus or procs, not both",
        "recipe",
    ),
    Case(
        "run-procs-batch-does-not-split",
        lambda t, r: run_recipe(t, recipe(r), "--procs", "3"),
        2,
        "pretrain on 3 processes (--procs 3): --batch-size 4 (global) is not divisible by the 3 processes",
        "option",
    ),
    Case(
        "run-gpus-without-gpu",
        lambda t, r: run_recipe(t, recipe(r).replace('device = "cpu"', 'device = "auto"'), "--gpus", "2"),
        2,
        "pretrain: --gpus 2: torch sees no CUDA GPU",
        "option",
        no_gpu=True,
    ),
    Case("run-name-escapes", lambda t, r: run_recipe(t, recipe(r, name="../x")), 2, "recipe.name", "recipe"),
    Case(
        "run-variant-name-escapes",
        lambda t, r: run_recipe(t, recipe(r, extra='\n[pretrain.variants."a/b"]\nscheme = "token"\n')),
        2,
        "pretrain.variants",
        "recipe",
    ),
    Case(
        "run-corpus-missing",
        lambda t, r: run_recipe(t, recipe(r, corpus=str(t / "nope.txt"))),
        1,
        "recipe.corpus",
        "missing",
    ),
    Case(
        "run-dev-file-missing",
        lambda t, r: run_recipe(
            t, recipe(r, extra=f'\n[eval.squad]\ntrain = "{r.squad_train}"\ndev = "{t / "dev.json"}"\n')
        ),
        1,
        "eval.squad.dev",
        "missing",
    ),
    Case(
        "run-set-malformed", lambda t, r: run_recipe(t, recipe(r), "--set", "nonsense"), 2, "--set", "recipe"
    ),
    Case(
        "run-set-unknown-key",
        lambda t, r: run_recipe(t, recipe(r), "--set", "shard.bogus=1"),
        2,
        "shard.bogus: unknown key",
        "recipe",
    ),
    Case(
        "run-set-wrong-type",
        lambda t, r: run_recipe(t, recipe(r), "--set", "pretrain.batch_size=abc"),
        2,
        "pretrain.batch_size",
        "recipe",
    ),
    Case(
        "run-out-is-a-file",
        lambda t, r: run_recipe(t, recipe(r), out=write(t, "afile", "x")),
        1,
        "is a file",
        "out",
    ),
    Case(
        "run-out-inside-corpus",
        lambda t, r: run_recipe(t, recipe(r, corpus=str(corpus_dir(t))), out=t / "corpus" / "p"),
        2,
        "lies inside the input",
        "out",
    ),
    # --quiet: the stage's "▶ tokenize: running" line comes before its refusal
    Case(
        "run-user-dir-where-a-stage-goes",
        lambda t, r: run_recipe(t, recipe(r), "--quiet", out=user_dir(t / "pipeline", "tokenize").parent),
        1,
        "never replaces files it did not write",
        "out",
    ),
    # ------------------------------------------------------------------------------------------ report
    Case(
        "report-missing", lambda t, r: tool("report", t / "nope"), 1, "no such pipeline directory", "missing"
    ),
    Case("report-empty-dir", lambda t, r: tool("report", empty_dir(t)), 1, "holds no artifacts", "empty"),
    Case("report-user-dir", lambda t, r: tool("report", user_dir(t)), 1, "holds no artifacts", "kind"),
    Case(
        "report-a-file",
        lambda t, r: tool("report", write(t, "afile", "x")),
        1,
        "is a file",
        "file-dir",
    ),
    Case(
        "report-an-artifact",
        lambda t, r: tool("report", r.run),
        1,
        "spanbert/run",
        "kind",
    ),
    Case(
        "report-damaged-manifest",
        lambda t, r: tool(
            "report",
            tampered(t, r.tok, "pipe/tokenize", lambda d: (d / "manifest.json").write_text("{")).parent,
        ),
        1,
        "tokenize",
        "tampered",
    ),
    Case(
        "report-plots-is-a-file",
        lambda t, r: tool(
            "report", copy(t, r.run, "pipe/pretrain").parent, "--plots", write(t, "afile", "x")
        ),
        1,
        "{tmp}/afile: is a file",
        "file-dir",
    ),
    Case(
        "report-plots-under-a-file",
        lambda t, r: tool(
            "report", copy(t, r.run, "pipe/pretrain").parent, "--plots", write(t, "afile", "x") / "plots"
        ),
        1,
        "is a file, not a directory",
        "file-dir",
    ),
    # ------------------------------------------------------------------------------------------ verify
    Case(
        "verify-missing", lambda t, r: tool("verify", t / "nope"), 1, "no such artifact directory", "missing"
    ),
    Case("verify-empty-dir", lambda t, r: tool("verify", empty_dir(t)), 1, "no manifest.json", "empty"),
    Case("verify-user-dir", lambda t, r: tool("verify", user_dir(t)), 1, "not an artifact", "kind"),
    Case(
        "verify-a-file", lambda t, r: tool("verify", r.tok / "manifest.json"), 1, "it is a file", "file-dir"
    ),
    Case(
        "verify-truncated-file",
        lambda t, r: tool(
            "verify", tampered(t, r.tok, "tok", lambda d: truncate(d / "data" / "part-00000.arrow"))
        ),
        1,
        "manifest says",
        "tampered",
    ),
    Case(
        "verify-modified-file",
        lambda t, r: tool(
            "verify",
            tampered(t, r.run, "run", lambda d: (checkpoint(d) / "config.json").write_text("{}" + " " * 100)),
        ),
        1,
        "/config.json: ",
        "tampered",
    ),
    Case(
        "verify-missing-file",
        lambda t, r: tool("verify", tampered(t, r.shards, "shards", lambda d: (d / "vocab.txt").unlink())),
        1,
        "vocab.txt: missing",
        "tampered",
    ),
    Case(
        "verify-manifest-not-json",
        lambda t, r: tool(
            "verify", tampered(t, r.run, "run", lambda d: (d / "manifest.json").write_text("{"))
        ),
        1,
        "unreadable manifest",
        "tampered",
    ),
    Case(
        "verify-manifest-path-outside",
        lambda t, r: tool("verify", edit_manifest(t, r.shards, "shards", set_file_field("path", "../x"))),
        1,
        "not a relative path inside the artifact",
        "tampered",
    ),
    # ----------------------------------------------------------------------------------------- lineage
    Case(
        "lineage-missing",
        lambda t, r: tool("lineage", t / "nope"),
        1,
        "no such artifact directory",
        "missing",
    ),
    Case("lineage-empty-dir", lambda t, r: tool("lineage", empty_dir(t)), 1, "no manifest.json", "empty"),
    Case(
        "lineage-a-file", lambda t, r: tool("lineage", write(t, "afile", "x")), 1, "it is a file", "file-dir"
    ),
    Case(
        "lineage-manifest-not-json",
        lambda t, r: tool(
            "lineage", tampered(t, r.shards, "shards", lambda d: (d / "manifest.json").write_text("{"))
        ),
        1,
        "unreadable manifest",
        "tampered",
    ),
    Case(
        "lineage-inputs-not-a-list",
        lambda t, r: tool("lineage", edit_manifest(t, r.run, "run", set_key("inputs", "x"))),
        1,
        "inputs must be a list",
        "tampered",
    ),
    Case(
        "lineage-schema-version-0",
        lambda t, r: tool("lineage", edit_manifest(t, r.tok, "tok", set_key("schema_version", 0))),
        1,
        "schema_version",
        "tampered",
    ),
]


def _param(case: Case) -> Any:
    marks = []
    if case.xfail:
        marks.append(pytest.mark.xfail(reason=case.xfail, strict=True))
    if case.no_gpu:
        marks.append(pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU"))
    return pytest.param(case, marks=marks, id=case.id)


# --------------------------------------------------------------------------------------------------
# the checks


def _tree(root: Path) -> dict[str, str]:
    """Every entry under `root` (hidden ones too): directories, and files with their content's hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _stamp(root: Path) -> dict[str, tuple[int, int]]:
    """A cheap snapshot of a shared artifact: each entry's size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _leftovers(parent: Path) -> list[str]:
    if not parent.is_dir():
        return []
    return sorted(
        p.name
        for p in parent.iterdir()
        if p.name.startswith((".tmp-", ".old-")) or (p.name.startswith(".") and p.name.endswith(".lock"))
    )


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(case: Case, cli, r: Inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SPANBERT_DEBUG", "SPANBERT_LOCK_WAIT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SPANBERT_WORKSPACE", str(tmp_path / "default-workspace"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    argv, out = case.build(tmp_path, r)
    argv = [str(a) for a in argv]
    words = case.command.split()
    assert argv[: len(words)] == words, (case.id, argv)

    out_existed = out is not None and out.exists()
    before = _tree(tmp_path)
    shared = {p: _stamp(p) for p in r.shared()}

    result = cli(*argv)

    fragment = case.fragment.replace("{tmp}", str(tmp_path)).replace("{out}", str(out))
    assert_one_line_error(result, fragment, code=case.code)
    assert "unexpected" not in result.err.lower(), result.err
    if out is not None:
        assert out.exists() == out_existed, f"{out} {'vanished' if out_existed else 'was left behind'}"
        assert _leftovers(out.parent) == [], result.err
    assert _leftovers(tmp_path) == []
    # nothing written, nothing of the user's (their notes.txt in --out, their corpus, the damaged copies)
    # deleted or changed, and the shared inputs untouched
    assert _tree(tmp_path) == before
    for p, stamp in shared.items():
        assert _stamp(p) == stamp, f"{p} changed"


def test_the_catalogue_covers_every_command_and_class() -> None:
    assert len(CASES) >= 60
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids), [i for i in ids if ids.count(i) > 1]
    assert {c.command for c in CASES} == set(COMMANDS)
    assert {c.cls for c in CASES} == set(CLASSES)
    assert all(c.code in (1, 2) for c in CASES)
