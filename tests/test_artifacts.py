"""Artifacts: what spanbert replaces, what manifests may say, and lineage that survives moving a tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error

from spanbert_cli import artifacts


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, small_corpus: list[Path], tokenizer_json: Path) -> Path:
    """A workspace holding tokenize → shard, made with relative paths from the workspace's parent."""
    from spanbert_cli.cli import main

    root = tmp_path_factory.mktemp("chain")
    corpus = root / "corpus"
    corpus.mkdir()
    for p in small_corpus[:3]:
        shutil.copy(p, corpus / p.name)
    here = os.getcwd()
    os.chdir(root)
    try:
        assert (
            main(
                [
                    "tokenize",
                    "corpus",
                    "--tokenizer",
                    str(tokenizer_json),
                    "--workers",
                    "1",
                    "--out",
                    "ws/tok",
                    "--quiet",
                ]
            )
            == 0
        )
        assert main(["shard", "ws/tok", "--max-seq-len", "64", "--out", "ws/shards", "--quiet"]) == 0
    finally:
        os.chdir(here)
    return root


def _manifest(path: Path) -> dict:
    return json.loads((path / artifacts.MANIFEST).read_text())


def _write_manifest(path: Path, data: dict) -> None:
    (path / artifacts.MANIFEST).write_text(json.dumps(data, indent=2))


# ---- spanbert removes only what spanbert wrote --------------------------------------------------------


def test_force_never_replaces_a_directory_of_the_users_files(
    tmp_path: Path, small_corpus: list[Path], tokenizer_json: Path, cli
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    r = cli(
        "tokenize", small_corpus[0], "--tokenizer", tokenizer_json, "--workers", "1", "--out", out, "--force"
    )
    assert_one_line_error(r, "not a spanbert artifact", code=1)
    assert "--force" not in r.err  # the refusal no longer suggests the flag that would have deleted them
    assert (out / "notes.txt").read_text() == "my notes" and sorted(os.listdir(out)) == ["notes.txt"]


def test_an_unreadable_manifest_is_not_proof_that_spanbert_wrote_a_directory(
    tmp_path: Path, small_corpus: list[Path], tokenizer_json: Path, cli
) -> None:
    out = tmp_path / "odd"
    out.mkdir()
    (out / "manifest.json").write_text("{ not json")
    (out / "data.bin").write_bytes(b"\x00" * 10)
    r = cli(
        "tokenize", small_corpus[0], "--tokenizer", tokenizer_json, "--workers", "1", "--out", out, "--force"
    )
    assert_one_line_error(r, "unreadable", code=1)
    assert (out / "data.bin").exists()


def test_force_replaces_a_different_spanbert_artifact(
    tmp_path: Path, small_corpus: list[Path], tokenizer_json: Path, cli
) -> None:
    out = tmp_path / "tok"
    base = ["tokenize", "--tokenizer", tokenizer_json, "--workers", "1", "--out", out, "--quiet"]
    assert cli(*base[:1], small_corpus[0], *base[1:]).code == 0
    r = cli(*base[:1], small_corpus[1], *base[1:])
    assert_one_line_error(r, "different spanbert/tokenized artifact", "--force")
    assert cli(*base[:1], small_corpus[1], *base[1:], "--force").code == 0
    assert _manifest(out)["inputs"][0]["name"] == small_corpus[1].name


@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_an_out_that_overlaps_an_input_is_refused(
    tmp_path: Path, small_corpus: list[Path], tokenizer_json: Path, cli, where: str
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(small_corpus[0], corpus / "a.txt")
    out = {"same": corpus, "inside": corpus / "tok", "contains": tmp_path}[where]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    r = cli("tokenize", corpus, "--tokenizer", tokenizer_json, "--workers", "1", "--out", out, "--force")
    assert_one_line_error(r, "choose an --out outside the inputs", code=2)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_shard_into_its_own_input_is_refused(chain: Path, cli) -> None:
    r = cli("shard", chain / "ws" / "tok", "--out", chain / "ws" / "tok" / "shards")
    assert_one_line_error(r, "lies inside the input", code=2)


def test_a_run_recipe_never_deletes_users_files_in_a_stage_directory(
    tmp_path: Path, small_corpus: list[Path], cli
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for p in small_corpus[:2]:
        shutil.copy(p, corpus / p.name)
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[recipe]\nname = "r"\ncorpus = ["{corpus}"]\n[tokenize]\nvocab_size = 600\nworkers = 1\n'
        '[shard]\nmax_seq_len = 64\n[pretrain]\nmodel = "tiny"\nmax_steps = 2\nbatch_size = 4\n'
        "num_workers = 0\n"
    )
    out = tmp_path / "D"
    (out / "shard").mkdir(parents=True)
    (out / "shard" / "precious.txt").write_text("keep me")
    r = cli("run", recipe, "--out", out, "--quiet")
    assert_one_line_error(r, "not a spanbert artifact")
    assert (out / "shard" / "precious.txt").read_text() == "keep me"


# ---- manifests: checked field by field, paths inside the artifact --------------------------------------


def _copy_artifact(chain: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "tok"
    shutil.copytree(chain / "ws" / "tok", dst)
    return dst


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/hostname", "data/../../outside.txt", "./x", ""])
def test_verify_refuses_a_manifest_listing_files_outside_the_artifact(
    chain: Path, tmp_path: Path, cli, path: str
) -> None:
    art = _copy_artifact(chain, tmp_path)
    (tmp_path / "outside.txt").write_text("not yours")
    m = _manifest(art)
    m["files"][0]["path"] = path
    _write_manifest(art, m)
    assert_one_line_error(cli("verify", art), "malformed manifest", "files[0].path", code=1)


def test_verify_refuses_a_link_out_of_the_artifact(chain: Path, tmp_path: Path, cli) -> None:
    art = _copy_artifact(chain, tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("x" * 10)
    listed = art / _manifest(art)["files"][0]["path"]
    listed.unlink()
    listed.symlink_to(secret)
    assert_one_line_error(cli("verify", art), "outside the artifact", code=1)


def _set(d: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    last = keys[-1]
    if isinstance(d, list):
        d[int(last)] = value
    else:
        d[last] = value


MALFORMED = [
    ("kind", 3),
    ("kind", ""),
    ("schema_version", 0),
    ("schema_version", "1"),
    ("schema_version", True),
    ("fingerprint", "abc"),
    ("fingerprint", None),
    ("params", []),
    ("stats", "x"),
    ("created", 5),
    ("inputs", {}),
    ("inputs.0", "a string"),
    ("inputs.0.path", 7),
    ("inputs.0.sha256", ["x"]),
    ("inputs.0.bytes", "12"),
    ("files", None),
    ("files.0", 1),
    ("files.0.bytes", -1),
    ("files.0.bytes", 1.5),
    ("files.0.sha256", None),
    ("files.0.rows", "3"),
]


@pytest.mark.parametrize(("field", "value"), MALFORMED, ids=[f"{f}={v!r}" for f, v in MALFORMED])
def test_a_malformed_manifest_is_refused_in_one_line(
    chain: Path, tmp_path: Path, cli, field: str, value
) -> None:
    art = _copy_artifact(chain, tmp_path)
    m = _manifest(art)
    _set(m, field, value)
    _write_manifest(art, m)
    for args in (("verify", art), ("lineage", art), ("shard", art, "--out", tmp_path / "s")):
        assert_one_line_error(cli(*args), "malformed manifest", code=1)
    assert not (tmp_path / "s").exists()


def test_an_unknown_field_and_a_non_object_manifest_are_refused(chain: Path, tmp_path: Path, cli) -> None:
    art = _copy_artifact(chain, tmp_path)
    m = _manifest(art)
    m["files"][0]["owner"] = "me"
    _write_manifest(art, m)
    assert_one_line_error(cli("verify", art), "files[0].owner", code=1)
    (art / artifacts.MANIFEST).write_text("[1, 2]")
    assert_one_line_error(cli("verify", art), "must be a JSON object", code=1)
    (art / artifacts.MANIFEST).write_text("[" * 100000)
    assert_one_line_error(cli("verify", art), "not JSON", code=1)


def test_inputs_that_form_a_cycle_are_refused(chain: Path, tmp_path: Path, cli) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(chain / "ws" / "tok", a)
    shutil.copytree(chain / "ws" / "shards", b)
    ma, mb = _manifest(a), _manifest(b)
    ma["inputs"] = [{"path": "../b", "role": "input", "fingerprint": mb["fingerprint"], "kind": mb["kind"]}]
    mb["inputs"] = [{"path": "../a", "role": "input", "fingerprint": ma["fingerprint"], "kind": ma["kind"]}]
    _write_manifest(a, ma)
    _write_manifest(b, mb)
    assert_one_line_error(cli("lineage", a), "cycle", code=1)


# ---- lineage: from any directory, after moving or copying the tree --------------------------------------


def _lineage(path: Path, cwd: Path) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "spanbert_cli", "lineage", str(path), "--json"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _nodes(node: dict) -> list[dict]:
    return [node, *(n for child in node.get("inputs", []) for n in _nodes(child))]


def test_manifests_record_input_paths_relative_to_the_artifact(chain: Path) -> None:
    assert _manifest(chain / "ws" / "shards")["inputs"][0]["path"] == "../tok"
    assert (
        _manifest(chain / "ws" / "tok")["inputs"][0]["path"]
        == "../../corpus/" + sorted(p.name for p in (chain / "corpus").iterdir())[0]
    )


def test_lineage_from_another_directory_and_after_the_tree_moves(chain: Path, tmp_path: Path) -> None:
    here = _lineage(chain / "ws" / "shards", cwd=tmp_path)
    assert not any(n.get("missing") or n.get("stale") for n in _nodes(here))
    assert [n["kind"] for n in _nodes(here)][:2] == ["spanbert/shards", "spanbert/tokenized"]

    moved = tmp_path / "elsewhere"
    shutil.copytree(chain, moved)
    tree = _lineage(moved / "ws" / "shards", cwd=Path("/"))
    upstream = tree["inputs"][0]
    assert (
        Path(upstream["path"]).resolve() == (moved / "ws" / "tok").resolve()
    )  # the copy's own, not the original
    assert not any(n.get("missing") for n in _nodes(tree))


def test_an_upstream_artifact_renamed_in_its_workspace_is_found_by_fingerprint(
    chain: Path, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(chain / "ws", ws)
    (ws / "tok").rename(ws / "tokenized-renamed")
    tree = _lineage(ws / "shards", cwd=tmp_path)
    assert Path(tree["inputs"][0]["path"]).name == "tokenized-renamed"
    assert not tree["inputs"][0].get("missing")
    shutil.rmtree(ws / "tokenized-renamed")
    assert _lineage(ws / "shards", cwd=tmp_path)["inputs"][0]["missing"] is True


def test_verify_and_report_work_from_any_directory(chain: Path, tmp_path: Path) -> None:
    for cmd in (["verify", str(chain / "ws" / "shards")], ["verify", str(chain / "ws" / "tok")]):
        r = subprocess.run(
            [sys.executable, "-m", "spanbert_cli", *cmd], cwd="/", capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr


def test_old_manifests_with_working_directory_paths_still_resolve(chain: Path, tmp_path: Path) -> None:
    art = tmp_path / "shards"
    shutil.copytree(chain / "ws" / "shards", art)
    m = _manifest(art)
    m["inputs"][0]["path"] = str(chain / "ws" / "tok")  # as an older spanbert wrote it: absolute
    _write_manifest(art, m)
    tree = artifacts.lineage(art)
    assert not tree["inputs"][0].get("missing")


# ---- a run that fails before its first checkpoint leaves nothing ---------------------------------------


def test_a_run_that_fails_while_starting_leaves_no_run_directory(
    speech_shards: Path, tmp_path: Path, cli
) -> None:
    shards = tmp_path / "shards"
    shutil.copytree(speech_shards, shards)
    m = _manifest(shards)
    train = next(f for f in m["files"] if f["path"].startswith("train/"))
    data = (shards / train["path"]).read_bytes()
    (shards / train["path"]).write_bytes(data[: len(data) // 2])  # truncated, the manifest re-hashed to match
    train["bytes"] = len(data) // 2
    train["sha256"] = artifacts.sha256_file(shards / train["path"])
    _write_manifest(shards, m)
    out = tmp_path / "run"
    fast = ["--model", "tiny", "--batch-size", "4", "--num-workers", "0", "--quiet"]
    r = cli("pretrain", shards, "--out", out, *fast, "--max-steps", "3")
    assert_one_line_error(r, code=1)
    assert "unexpected" not in r.err
    assert not out.exists()
    # The --out is free for a run with other parameters.
    assert cli("pretrain", speech_shards, "--out", out, *fast, "--max-steps", "2").code == 0


def test_a_run_left_in_state_running_without_checkpoints_is_replaced(
    speech_shards: Path, tmp_path: Path, cli
) -> None:
    out = tmp_path / "run"
    fast = ["--model", "tiny", "--batch-size", "4", "--num-workers", "0", "--quiet"]
    assert cli("pretrain", speech_shards, "--out", out, *fast, "--max-steps", "2").code == 0
    m = _manifest(out)
    m["stats"]["status"] = "running"  # as a run killed before its first checkpoint leaves it
    _write_manifest(out, m)
    shutil.rmtree(out / "checkpoints")
    stamp = time.time()
    assert cli("pretrain", speech_shards, "--out", out, *fast, "--max-steps", "3").code == 0
    after = _manifest(out)
    assert after["stats"]["status"] == "complete" and after["stats"]["step"] == 3
    assert (out / "manifest.json").stat().st_mtime >= stamp


# ---- an artifact's fingerprint always describes its content --------------------------------------------


def test_a_corpus_file_edited_while_tokenize_reads_it_fails_and_leaves_nothing(
    tmp_path: Path, small_corpus: list[Path]
) -> None:
    corpus = tmp_path / "corpus.txt"
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in small_corpus)
    corpus.write_text("\n\n".join([text] * 4), encoding="utf-8")
    out = tmp_path / "tok"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spanbert_cli",
            "tokenize",
            str(corpus),
            "--vocab-size",
            "3000",
            "--workers",
            "1",
            "--out",
            str(out),
            "--quiet",
        ],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not any(q.name.startswith(".tmp-tok-") for q in tmp_path.iterdir()):
        assert p.poll() is None and time.monotonic() < deadline, "tokenize ended before it started writing"
        time.sleep(0.01)
    with corpus.open("a", encoding="utf-8") as f:  # the user edits the file: the run was planned before
        f.write("\n\nA paragraph added while spanbert was reading the file.\n")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "corpus.txt" in lines[0] and "changed while spanbert read it" in lines[0], err
    assert sorted(q.name for q in tmp_path.iterdir()) == ["corpus.txt"]
