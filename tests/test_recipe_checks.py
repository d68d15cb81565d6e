"""`spanbert run` refuses up front what a recipe or --out gets wrong: names that would leave the workspace,
paths that name nothing, an --out that is a file or lies inside the inputs. One line, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, assert_one_line_error

from spanbert_cli.errors import DataError
from spanbert_cli.pipeline.recipe import PATH_KEYS, load_recipe, path_problem

SAMPLE = ROOT / "spanbert_cli" / "data" / "sample" / "inaugural"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A corpus directory of two real speeches."""
    d = tmp_path / "corpus"
    d.mkdir()
    for name in ("2001-Bush.txt", "2005-Bush.txt"):
        shutil.copy(SAMPLE / name, d / name)
    return d


@pytest.fixture
def no_hashing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files hashed (the first thing a stage's status check does): a refusal up front hashes none."""
    from spanbert_cli.artifacts import manifest

    hashed: list[str] = []
    real = manifest.sha256_file

    def counting(path):
        hashed.append(str(path))
        return real(path)

    monkeypatch.setattr(manifest, "sha256_file", counting)  # what input hashing calls
    return hashed


def write_recipe(tmp_path: Path, text: str, name: str = "recipe.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def two_stages(corpus: str | Path, name: str = "two-stages", extra: str = "") -> str:
    return (
        f'[recipe]\nname = "{name}"\ncorpus = ["{corpus}"]\n\n'
        f"[tokenize]\nvocab_size = 400\nworkers = 1\n\n[shard]\nmax_seq_len = 64\n{extra}"
    )


def entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


# --------------------------------------------------------------------------------------------------
# names that become directories


@pytest.mark.parametrize("name", ["../x", "../../x", "a/b", "..", ".", "-x", "a\\b", "x" * 101])
def test_a_name_that_is_not_one_directory_is_refused(name: str, cli, tmp_path: Path, corpus: Path) -> None:
    workspace = tmp_path / "ws" / "inner"
    before = entries(tmp_path)
    text = two_stages(corpus, name=name.replace("\\", "\\\\"))
    r = cli("run", write_recipe(tmp_path, text), "--workspace", workspace, "--dry-run")
    assert_one_line_error(r, "recipe.name", repr(name), "use letters, digits", code=2)
    assert entries(tmp_path) == [*before, "recipe.toml"]  # nothing under the workspace, nor beside it


def test_a_variant_that_is_not_one_directory_is_refused(cli, tmp_path: Path, corpus: Path) -> None:
    text = two_stages(
        corpus, extra='\n[pretrain]\nmodel = "tiny"\n[pretrain.variants."../v"]\nscheme = "token"\n'
    )
    out = tmp_path / "out" / "pipe"
    r = cli("run", write_recipe(tmp_path, text), "--out", out)
    assert_one_line_error(r, "pretrain.variants: '../v'", "DIR/pretrain-NAME", code=2)
    assert not (tmp_path / "out").exists()


def test_a_bad_file_name_is_refused_with_the_key_that_fixes_it(cli, tmp_path: Path, corpus: Path) -> None:
    text = two_stages(corpus).replace('name = "two-stages"\n', "")
    r = cli(
        "run", write_recipe(tmp_path, text, "my recipe.toml"), "--workspace", tmp_path / "ws", "--dry-run"
    )
    assert_one_line_error(r, "recipe.name: 'my recipe'", "set recipe.name", code=2)


def test_plain_names_still_work(tmp_path: Path, corpus: Path) -> None:
    text = two_stages(corpus, name="run_2.1-a", extra='\n[pretrain.variants.span-sbo]\nscheme = "span"\n')
    recipe = load_recipe(write_recipe(tmp_path, text))
    assert recipe.name == "run_2.1-a" and list(recipe.variants) == ["span-sbo"]


# --------------------------------------------------------------------------------------------------
# every path a recipe names, checked before the first stage


def test_a_missing_dev_file_and_tokenizer_are_reported_together_before_any_stage(
    cli, tmp_path: Path, corpus: Path, no_hashing: list[str]
) -> None:
    dev, tok = tmp_path / "no-such-dev.json", tmp_path / "no-such-tokenizer.json"
    text = two_stages(corpus, extra=f'\n[pretrain]\nmodel = "tiny"\n\n[eval.squad]\ndev = "{dev}"\n')
    text = text.replace("workers = 1\n", f'workers = 1\ntokenizer = "{tok}"\n')
    out, workspace = tmp_path / "out", tmp_path / "ws"
    for extra in ([], ["--dry-run"]):
        r = cli("run", write_recipe(tmp_path, text), "--out", out, "--workspace", workspace, *extra)
        assert_one_line_error(
            r, f"tokenize.tokenizer: {tok}: no such file", f"eval.squad.dev: {dev}: no such file", code=1
        )
        assert r.err.count("; ") >= 1
    assert not out.exists() and not workspace.exists()
    assert no_hashing == []  # no stage's status was even computed: the corpus was never read


def test_every_corpus_entry_is_checked(cli, tmp_path: Path, corpus: Path, no_hashing: list[str]) -> None:
    nothing = tmp_path / "empty"
    nothing.mkdir()
    pattern, missing = f"{nothing}/*.txt", tmp_path / "gone"
    text = two_stages(corpus).replace(
        f'["{corpus}"]', f'["{corpus}", "{pattern}", "{missing}", "spanbert:nope"]'
    )
    r = cli("run", write_recipe(tmp_path, text), "--out", tmp_path / "out")
    assert_one_line_error(
        r,
        f"recipe.corpus: {pattern}: the pattern matches no file",
        f"recipe.corpus: {missing}: no such file or directory",
        "data/nope: no such file or directory",
        code=1,
    )
    assert not (tmp_path / "out").exists() and no_hashing == []


def test_key_and_path_problems_are_one_line_and_a_usage_error(cli, tmp_path: Path, corpus: Path) -> None:
    text = two_stages(tmp_path / "gone") + "max_seq_length = 3\n"
    r = cli("run", write_recipe(tmp_path, text), "--out", tmp_path / "out")
    assert_one_line_error(r, "shard.max_seq_length: unknown key", "recipe.corpus:", "no such file", code=2)


def test_pretrain_paths_are_checked_under_the_key_they_were_written(tmp_path: Path, corpus: Path) -> None:
    extra = (
        f'\n[pretrain]\ninit_from = "{tmp_path / "no-run"}"\n'
        f'[pretrain.variants.a]\nscheme = "token"\n'
        f'[pretrain.variants.b]\nscheme = "word"\ninit_from = "{corpus / "2001-Bush.txt"}"\n'
    )
    with pytest.raises(DataError) as e:
        load_recipe(write_recipe(tmp_path, two_stages(corpus, extra=extra)))
    msg = str(e.value)
    assert msg.count("pretrain.init_from:") == 1  # once, though variant a and the shared table share it
    assert "pretrain.variants.b.init_from:" in msg and "not a directory" in msg


def test_dataset_names_bundled_data_and_real_paths_pass(
    cli, tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rajpurkar/squad` is a datasets name, not a missing file; spanbert:… resolves to bundled data."""
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    (tok_dir / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n")
    text = two_stages(corpus, extra='\n[pretrain]\nmodel = "tiny"\n\n[eval.squad]\n').replace(
        "workers = 1\n", f'workers = 1\ntokenizer = "{tok_dir}"\n'
    )
    for train, dev in (
        ("rajpurkar/squad", "squad"),
        ("spanbert:squad/train-sample.json", "spanbert:squad/dev-sample.json"),
    ):
        recipe = load_recipe(write_recipe(tmp_path, text + f'train = "{train}"\ndev = "{dev}"\n'))
        assert recipe.squad_data["dev"] and recipe.sections["tokenize"].tokenizer == str(tok_dir)
    (tok_dir / "vocab.txt").unlink()
    with pytest.raises(DataError, match=r"tokenize\.tokenizer: .*no tokenizer\.json or vocab\.txt"):
        load_recipe(write_recipe(tmp_path, text + 'dev = "squad"\n'))


def test_a_glob_corpus_that_matches_runs(cli, tmp_path: Path, corpus: Path) -> None:
    r = cli(
        "run",
        write_recipe(tmp_path, two_stages(f"{corpus}/*.txt")),
        "--out",
        tmp_path / "o",
        "--dry-run",
        "--json",
    )
    assert r.code == 0, r.err
    assert [s["state"] for s in json.loads(r.out)["stages"]] == ["run", "run"]


def test_every_path_key_has_a_check() -> None:
    for section, keys in PATH_KEYS.items():
        for key in keys:
            assert path_problem(f"{section}.{key}", str(ROOT / "no-such-thing.json")) is not None


def test_shipped_templates_load_without_their_inputs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """spanbert-base names a corpus the user supplies (--set recipe.corpus=…): loaded, it is refused."""
    monkeypatch.chdir(tmp_path)  # where no ./corpus is
    base = ROOT / "pipelines" / "spanbert-base.toml"
    assert load_recipe(base, check_inputs=False).corpus == ["corpus"]
    with pytest.raises(DataError, match=r"recipe\.corpus: corpus: no such file or directory"):
        load_recipe(base)


# --------------------------------------------------------------------------------------------------
# --out


@pytest.mark.parametrize("dry_run", [False, True])
def test_out_a_file_is_refused(cli, tmp_path: Path, corpus: Path, dry_run: bool) -> None:
    recipe = write_recipe(tmp_path, two_stages(corpus))
    target = tmp_path / "a-file"
    target.write_text("mine")
    extra = ["--dry-run"] if dry_run else []
    assert_one_line_error(
        cli("run", recipe, "--out", target, *extra),
        f"error: {target}: --out is a file; choose a directory",
        code=1,
    )
    assert_one_line_error(
        cli("run", recipe, "--out", target / "sub", *extra),
        f"{target / 'sub'}: --out lies under the file {target}; choose a directory",
        code=1,
    )
    assert target.read_text() == "mine"


def test_a_workspace_that_is_a_file_is_refused(cli, tmp_path: Path, corpus: Path) -> None:
    ws = tmp_path / "ws"
    ws.write_text("")
    r = cli("run", write_recipe(tmp_path, two_stages(corpus)), "--workspace", ws)
    assert_one_line_error(r, "--workspace lies under the file", str(ws), code=1)


@pytest.mark.parametrize(
    ("where", "how"), [("corpus/pipe", "lies inside"), ("corpus", "is"), (".", "contains")]
)
def test_out_overlapping_the_corpus_is_refused(
    where: str, how: str, cli, tmp_path: Path, corpus: Path, no_hashing: list[str]
) -> None:
    out = tmp_path / where
    before = entries(corpus)
    for extra in ([], ["--dry-run"]):
        r = cli("run", write_recipe(tmp_path, two_stages(corpus)), "--out", out, *extra)
        assert_one_line_error(r, f"--out {how} the input {corpus} (recipe.corpus)", code=2)
    assert entries(corpus) == before and no_hashing == []


@pytest.mark.parametrize(
    ("pattern", "out", "refused"),
    [
        ("corpus/**/*.txt", "corpus/pipe", True),  # a re-run would take the pipeline's vocab.txt
        ("*/*.txt", ".", True),
        ("corpus/*.txt", ".", True),  # contains the matches
        ("corpus/*.txt", "corpus/pipe", False),  # the pattern does not reach below corpus/
        ("corpus/*.txt", "elsewhere/pipe", False),
    ],
)
def test_out_where_a_corpus_pattern_finds_files_is_refused(
    pattern: str, out: str, refused: bool, cli, tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    r = cli("run", write_recipe(tmp_path, two_stages(pattern)), "--out", out, "--dry-run")
    if refused:
        assert_one_line_error(r, f"--out lies where the input pattern {pattern} (recipe.corpus)", code=2)
    else:
        assert r.code == 0, r.err
