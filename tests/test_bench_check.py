"""benchmarks/check.py: a result is stale once a later commit touches its script or the code it measures."""

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from check import MEASURES, check  # noqa: E402


def git(repo, *args):
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_staleness_follows_commits_to_measured_code(tmp_path):
    repo = tmp_path
    (repo / "src" / "stage").mkdir(parents=True)
    (repo / "src" / "other").mkdir()
    (repo / "benchmarks" / "results").mkdir(parents=True)
    (repo / "src" / "stage" / "a.py").write_text("x = 1\n")
    (repo / "src" / "other" / "b.py").write_text("y = 1\n")
    (repo / "benchmarks" / "speed.py").write_text("# bench\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    sha = git(repo, "rev-parse", "--short", "HEAD")
    results = repo / "benchmarks" / "results"
    (results / "speed.json").write_text(json.dumps({"git": sha}))
    (results / "old.json").write_text(json.dumps({"rows": []}))
    (results / "orphan.json").write_text(json.dumps({"git": sha}))
    measures = {"speed": ("speed.py", ["src/stage"]), "old": ("speed.py", ["src/stage"])}

    rows = {r["name"]: r for r in check(repo, results, measures)}
    assert rows["speed"]["status"] == "fresh"
    assert rows["old"]["status"] == "stale" and "no git sha" in rows["old"]["why"]
    assert rows["orphan"]["status"] == "unknown"

    (repo / "src" / "other" / "b.py").write_text("y = 2\n")  # code it does not measure
    git(repo, "commit", "-qam", "other")
    assert {r["name"]: r for r in check(repo, results, measures)}["speed"]["status"] == "fresh"
    (repo / "src" / "stage" / "a.py").write_text("x = 2\n")
    git(repo, "commit", "-qam", "faster stage")
    row = {r["name"]: r for r in check(repo, results, measures)}["speed"]
    assert row["status"] == "stale" and "faster stage" in row["why"]
    (results / "speed.json").write_text(json.dumps({"git": "0123abc"}))
    assert "not in this history" in {r["name"]: r for r in check(repo, results, measures)}["speed"]["why"]


def test_every_results_file_says_what_it_measures():
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    names = {p.stem for p in results.glob("*.json")}
    assert names <= set(MEASURES), f"add to benchmarks/check.py MEASURES: {sorted(names - set(MEASURES))}"
    root = results.parent.parent
    for script, paths in MEASURES.values():
        assert (results.parent / script).resolve().exists(), script
        assert all((root / p).exists() for p in paths), paths


def test_make_bench_runs_every_benchmark_script():
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    listed = (bench / "all.sh").read_text()
    scripts = {p.name for p in bench.glob("*.py") if not p.name.startswith("_")}
    missing = sorted(s for s in scripts if f" {s}" not in listed)
    assert not missing, f"add to benchmarks/all.sh (make bench): {missing}"
