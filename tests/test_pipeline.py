"""`spanbert run` and `spanbert report`: the quick start end to end, caching, re-runs, bad recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import INAUGURAL, ROOT, assert_one_line_error

from spanbert_cli.pipeline.recipe import load_recipe

QUICKSTART = ROOT / "pipelines" / "quickstart.toml"
# The quick start with a few steps per stage, so that the whole chain runs in seconds.
FAST = [
    "--set", "pretrain.max_steps=6",
    "--set", "pretrain.warmup_steps=1",
    "--set", "pretrain.eval_every=3",
    "--set", "pretrain.save_every=3",
    "--set", "pretrain.log_every=1",
    "--set", "pretrain.num_workers=0",
    "--set", "pretrain.batch_size=8",
    "--set", "eval.squad.max_steps=2",
    "--set", "eval.squad.max_train_examples=40",
    "--set", "eval.squad.max_eval_examples=20",
    "--set", "eval.mlm.max_sequences=32",
    "--set", "eval.mlm.num_workers=0",
]  # fmt: skip
STAGES = ["tokenize", "shard", "pretrain", "eval-squad", "eval-mlm"]


def run(cli, out: Path, *extra: str):
    r = cli("run", QUICKSTART, "--out", out, *FAST, *extra, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The quick start run once (module-scoped: the later tests build on it)."""
    from spanbert_cli.cli import main

    out = tmp_path_factory.mktemp("pipe") / "quickstart"
    assert main(["run", str(QUICKSTART), "--out", str(out), *FAST, "--quiet"]) == 0
    return out


@pytest.mark.slow
def test_quickstart_runs_end_to_end_then_is_all_cache_hits(finished: Path, cli) -> None:
    for stage in STAGES:
        m = json.loads((finished / stage / "manifest.json").read_text())
        assert m["extra"]["recipe"]["name"] == "quickstart"
        assert (
            m["extra"]["recipe"]["content"]["pretrain"]["max_steps"] == 6
        )  # the resolved recipe, --set included
    metrics = json.loads((finished / "eval-squad" / "metrics.json").read_text())
    assert {"exact_match", "f1"} <= set(metrics)
    preds = json.loads((finished / "eval-squad" / "predictions.json").read_text())
    assert len(preds) == 20
    assert "mlm_loss" in json.loads((finished / "eval-mlm" / "metrics.json").read_text())
    again = run(cli, finished)
    assert again["ran"] == []
    assert [s["state"] for s in again["stages"]] == ["up to date"] * len(STAGES)
    lineage = json.loads(cli("lineage", finished / "eval-squad", "--json").out)
    kinds = []
    node = lineage
    while node:
        kinds.append(node["kind"])
        node = next((c for c in node["inputs"] if c["kind"].startswith("spanbert/")), None)
    assert kinds == ["spanbert/eval-squad", "spanbert/run", "spanbert/shards", "spanbert/tokenized"]


@pytest.mark.slow
def test_changing_a_masking_parameter_reruns_exactly_pretrain_and_eval(
    finished: Path, cli, tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    plan = json.loads(
        cli(
            "run", QUICKSTART, "--out", out, *FAST, "--set", "pretrain.geometric_p=0.3", "--dry-run", "--json"
        ).out
    )
    states = {s["stage"]: s for s in plan["stages"]}
    assert states["tokenize"]["state"] == states["shard"]["state"] == "up to date"
    assert states["pretrain"]["state"] == "run" and "geometric_p 0.2 → 0.3" in states["pretrain"]["reason"]
    ran = run(cli, out, "--set", "pretrain.geometric_p=0.3")["ran"]
    assert ran == ["pretrain", "eval-squad", "eval-mlm"]


@pytest.mark.slow
def test_failure_names_the_stage_and_a_rerun_finishes(finished: Path, cli, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    shutil.rmtree(out / "eval-squad")
    shutil.rmtree(out / "eval-mlm")
    broken = tmp_path / "broken-dev.json"  # there (a missing one is refused before any stage), not SQuAD
    broken.write_text('{"data": "not squad"}')
    bad = cli("run", QUICKSTART, "--out", out, *FAST, "--set", f'eval.squad.dev="{broken}"', "--quiet")
    assert_one_line_error(bad, "stage eval-squad failed", str(broken), "not SQuAD JSON")
    assert not (out / "eval-squad").exists() and not (out / "eval-mlm").exists()
    done = run(cli, out)
    assert done["ran"] == ["eval-squad", "eval-mlm"]


def test_interrupted_pretraining_resumes(finished: Path, cli, tmp_path: Path) -> None:
    """A run directory left with checkpoints and status `running` is resumed, not restarted."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    manifest = out / "pretrain" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["stats"]["status"] = "running"
    manifest.write_text(json.dumps(m))
    plan = json.loads(cli("run", QUICKSTART, "--out", out, *FAST, "--dry-run", "--json").out)
    assert plan["stages"][2]["state"] == "resume"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[recipe]\ncorpus = 'x'\n[tokenise]\nvocab_size = 10\n", "tokenise: unknown stage"),
        ("[recipe]\ncorpus = 'x'\n[shard]\nmax_seq_length = 128\n", "shard.max_seq_length: unknown key"),
        ("[recipe]\ncorpus = 'x'\n[shard]\nmax_seq_len = '128'\n", "shard.max_seq_len: expected int"),
        ("[recipe]\ncorpus = 'x'\n[pretrain]\nmax_steps = 1.5\n", "pretrain.max_steps: expected int"),
        (
            "[recipe]\ncorpus = 'x'\n[pretrain.variants.a]\nschem = 'token'\n",
            "pretrain.variants.a.schem: unknown key",
        ),
        ("[recipe]\n[shard]\n", "recipe.corpus"),
        ("[recipe]\ncorpus = 'x'\n[shard]\nmax_seq_len = 4\n", "--max-seq-len"),
        ("[recipe\n", "not valid TOML"),
    ],
)
def test_malformed_recipe_is_refused_before_anything_runs(
    text: str, fragment: str, cli, tmp_path: Path
) -> None:
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    out = tmp_path / "out"
    assert_one_line_error(cli("run", recipe, "--out", out), fragment, code=2)
    assert not out.exists()


def test_bad_set_is_refused(cli, tmp_path: Path) -> None:
    assert_one_line_error(
        cli("run", QUICKSTART, "--out", tmp_path / "o", "--set", "pretrain.nope=1"),
        "pretrain.nope: unknown key",
        code=2,
    )
    assert_one_line_error(
        cli("run", QUICKSTART, "--out", tmp_path / "o", "--set", "novalue"), "--set", code=2
    )


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path: Path) -> None:
    recipe = load_recipe(path, check_inputs=False)  # the GPU recipes' corpus is a parameter
    assert recipe.corpus
    assert "tokenize" in recipe.sections and "shard" in recipe.sections
    assert any(k.startswith("pretrain/") for k in recipe.sections)


def test_ablation_recipe_compares_the_four_schemes() -> None:
    recipe = load_recipe(ROOT / "pipelines" / "ablation-masking.toml")
    runs = {k: v for k, v in recipe.sections.items() if k.startswith("pretrain/")}
    assert {(c.scheme, c.sbo_weight) for c in runs.values()} == {
        ("token", 0),
        ("word", 0),
        ("span", 0),
        ("span", 1),
    }
    others = {k: v for c in runs.values() for k, v in vars(c).items() if k not in ("scheme", "sbo_weight")}
    for c in runs.values():  # same corpus, model and compute: only the masking differs
        assert {k: v for k, v in vars(c).items() if k not in ("scheme", "sbo_weight")} == others


@pytest.mark.slow
def test_report(finished: Path, cli) -> None:
    r = cli("report", finished, "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert len(data["runs"]) == 1 and data["runs"][0]["run"] == "pretrain"
    assert data["runs"][0]["SQuAD F1"] != "–"
    assert [Path(p).name for p in data["plots"]] == ["loss.png", "accuracy.png", "lr.png"]
    human = cli("report", finished)
    assert human.code == 0 and "runs and evaluations" in human.err and "spanbert/tokenized" in human.err
    assert_one_line_error(cli("report", finished / "nothing"), "no such pipeline directory")


def test_a_pipeline_reads_each_input_file_once_for_its_hash(tmp_path: Path, cli, monkeypatch) -> None:
    """The status check and the tokenize stage both need the corpus's hashes: one read serves both."""
    import shutil

    from spanbert_cli.artifacts import manifest

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("2001-Bush.txt", "2005-Bush.txt"):
        shutil.copy(INAUGURAL / name, corpus / name)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'[recipe]\nname = "two-stages"\ncorpus = ["{corpus}"]\n\n'
        "[tokenize]\nvocab_size = 400\nworkers = 1\n\n[shard]\nmax_seq_len = 64\n"
    )
    hashed: list[str] = []
    real = manifest.sha256_file

    def counting(path):
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(manifest, "sha256_file", counting)  # what input hashing calls
    r = cli("run", recipe, "--out", tmp_path / "out", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["ran"] == ["tokenize", "shard"]
    assert sorted(n for n in hashed if n.endswith("Bush.txt")) == ["2001-Bush.txt", "2005-Bush.txt"]


def test_a_remembered_hash_is_forgotten_when_the_file_changes(tmp_path: Path) -> None:
    import os

    from spanbert_cli import artifacts

    f = tmp_path / "a.txt"
    f.write_text("one")
    with artifacts.remembered_input_hashes():
        first = artifacts.InputRef.from_file(f).sha256
        f.write_text("two")
        os.utime(f, ns=(1, 1))  # a new mtime even on a coarse clock
        second = artifacts.InputRef.from_file(f).sha256
    assert first != second == artifacts.sha256_file(f)
