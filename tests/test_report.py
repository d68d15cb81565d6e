"""`spanbert report DIR` on a real pipeline of two tiny runs (a masking ablation in miniature): the
lineage graph (each artifact once), the table in a 100-column terminal, the PNG plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import INAUGURAL, ROOT, assert_one_line_error, png_size
from rich.cells import cell_len

from spanbert_cli.pipeline import report as rp

RECIPE = """
[recipe]
name = "tiny-ablation"
corpus = [{corpus}]

[tokenize]
vocab_size = 800
workers = 1

[shard]
max_seq_len = 64
valid_fraction = 0.2

[pretrain]
model = "tiny"
max_steps = 4
batch_size = 8
lr = 2e-3
warmup_steps = 1
log_every = 1
eval_every = 2
eval_sequences = 16
save_every = 4
num_workers = 0

[pretrain.variants.span-sbo]
scheme = "span"

[pretrain.variants.token]
scheme = "token"
sbo_weight = 0.0

[eval.mlm]
max_sequences = 16
"""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spanbert_cli.cli import main

    root = tmp_path_factory.mktemp("report")
    corpus = ", ".join(f'"{INAUGURAL / n}"' for n in ("2001-Bush.txt", "2005-Bush.txt"))
    recipe = root / "recipe.toml"
    recipe.write_text(RECIPE.format(corpus=corpus))
    assert main(["run", str(recipe), "--out", str(root / "pipe"), "--quiet"]) == 0
    return root / "pipe"


def report_in_terminal(directory: Path, *args: str, columns: int = 100) -> subprocess.CompletedProcess:
    """`spanbert report` as a user's terminal of `columns` columns shows it (rich reads COLUMNS)."""
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "spanbert_cli", "report", str(directory), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_graph_names_each_artifact_once(pipeline: Path, cli) -> None:
    r = cli("report", pipeline, "--json", "--no-plots")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    graph = data["graph"]
    fps = [n["fingerprint"] for n in graph]
    assert len(fps) == len(set(fps)) == 6  # tokenize, shard, 2 runs, their 2 MLM evaluations
    by_name = {Path(n["path"]).name: n for n in graph}
    assert set(by_name) == {a.name for a in pipeline.iterdir() if (a / "manifest.json").is_file()}
    shard = by_name["shard"]["fingerprint"]
    # The shards are read by the four artifacts below them, and listed once.
    assert sum(shard in n["inputs"] for n in graph) == 4
    assert [g["count"] for g in by_name["tokenize"]["files"]] == [2]  # the corpus, summarised
    assert data["plots"] == []

    human = report_in_terminal(pipeline, "--no-plots")
    assert human.returncode == 0, human.stderr
    for n in graph:  # each artifact drawn once: its kind and fingerprint appear together once
        assert human.stderr.count(f"{n['kind']} {n['fingerprint'][:12]}") == 1, n["path"]
    assert "input: 2 files, " in human.stderr
    assert human.stderr.count(f"also shard {shard[:12]}") == 2  # the evaluations refer to it


def test_the_report_fits_100_columns_with_whole_headers(pipeline: Path) -> None:
    r = report_in_terminal(pipeline, "--no-plots")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert max(cell_len(line) for line in lines) <= 100, max(lines, key=cell_len)
    assert "…" not in r.stderr
    header, rows = rp.comparison_rows(rp.collect(pipeline).runs)
    assert rp.table_width(header, rows) > 100  # so the table is drawn transposed, a column per run
    assert "runs and evaluations (a column per run)" in r.stderr
    for title in header[1:]:  # every metric's name is shown whole
        assert any(line.strip("│┃ ").startswith(title + " ") for line in lines), title
    for run in ("span-sbo", "token"):
        assert any(run in line and "┃" in line for line in lines), run  # as a column header
        assert any(line.startswith(f"{run} ") and "loss" in line for line in lines)  # its sparkline


def test_plots_are_real_pngs(pipeline: Path, tmp_path: Path, cli) -> None:
    r = cli("report", pipeline, "--json")
    assert r.code == 0, r.err
    plots = [Path(p) for p in json.loads(r.out)["plots"]]
    assert [p.name for p in plots] == ["loss.png", "accuracy.png", "lr.png"]
    assert all(p.parent == pipeline / "plots" for p in plots)
    for p in plots:
        width, height = png_size(p)
        assert 600 <= width <= 2000 and 300 <= height <= 1000, (p, width, height)
        assert p.stat().st_size > 10_000, p  # curves, axes and text, not an empty canvas

    elsewhere = tmp_path / "figures"
    r = cli("report", pipeline, "--plots", elsewhere)
    assert r.code == 0, r.err
    assert sorted(p.name for p in elsewhere.iterdir()) == [
        ".spanbert-plots",
        "accuracy.png",
        "loss.png",
        "lr.png",
    ]
    assert f"plots: {elsewhere / 'loss.png'}" in r.err
    assert cli("report", pipeline, "--plots", elsewhere).code == 0  # its own plots: replaced

    # A loss.png that spanbert did not write is never replaced.
    users = tmp_path / "users"
    users.mkdir()
    (users / "loss.png").write_bytes(b"the user's own figure")
    assert_one_line_error(cli("report", pipeline, "--plots", users), "spanbert did not write it")
    assert (users / "loss.png").read_bytes() == b"the user's own figure"
    assert sorted(p.name for p in users.iterdir()) == ["loss.png"]

    assert_one_line_error(
        cli("report", pipeline, "--plots", pipeline / "shard" / "manifest.json"), "is a file"
    )


def test_a_wide_table_is_transposed_in_blocks_that_fit() -> None:
    header = ["run", "scheme", "steps", "train loss", "valid loss", "SQuAD EM", "SQuAD F1"]
    rows = [[f"variant-{i}", "span", "1000", "3.21", "3.4", "12.5", "20.25"] for i in range(6)]
    assert rp.table_blocks(header, rows, 200) == (False, [(header, rows)])
    transposed, blocks = rp.table_blocks(header, rows, 60)
    assert transposed and len(blocks) > 1
    assert [name for h, _ in blocks for name in h[1:]] == [r[0] for r in rows]  # every run, in order
    for h, body in blocks:
        assert rp.table_width(h, body) <= 60
        assert [line[0] for line in body] == header[1:]  # one row per metric


def test_without_matplotlib_the_report_says_how_to_get_it(
    pipeline: Path, tmp_path: Path, cli, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an absent package looks like to an import
    r = cli("report", pipeline, "--plots", tmp_path / "figures")
    assert r.code == 0, r.err
    assert (
        "runs and evaluations" in r.err
        and "no plots: matplotlib is not installed (pip install matplotlib)" in r.err
    )
    assert not (tmp_path / "figures").exists()
    r = cli("mask-preview", pipeline / "shard", "--stats", "10", "--plot", tmp_path / "m.png")
    assert_one_line_error(r, "--plot needs matplotlib: pip install matplotlib", code=2)
