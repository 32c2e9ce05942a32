"""General-domain mixing: registered general sources, `mixture.general_fraction` end to end (seeded selection, the
card's mix section), neutral templates for general rows, and one-line errors for a fraction that cannot work.
No hub here: the general sources are local JSONL files, one a registered hub source pointed at a local path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import one_line_error

from aloekit.config import load_config
from aloekit.data.cot import CotConfig, select_pool
from aloekit.data.mixture import apply_general_fraction
from aloekit.data.pipeline import DataConfig, run
from aloekit.data.readers import BadRows
from aloekit.data.records import Record
from aloekit.data.sources import REGISTRY, SourceConfig, is_general, load_source
from aloekit.data.templates import render_sft
from aloekit.errors import UserError

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["rivers", "volcanoes", "chess openings", "sorting algorithms", "bread baking", "jazz history",
          "prime numbers", "bicycle repair", "tax forms", "knitting patterns"]


def _general_files(tmp_path: Path) -> tuple[Path, Path]:
    """SmolTalk-shaped chats and MetaMathQA-shaped problems, every row distinct so dedup keeps them all."""
    chats = tmp_path / "smoltalk.jsonl"
    with chats.open("w") as f:
        for i in range(200):
            t = TOPICS[i % len(TOPICS)]
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"Tell me one fact about {t}, number {i}, in a short sentence please."},
                {"role": "assistant", "content": f"Fact {i} about {t}: it rewards patient study ({i * 7919 % 1000})."},
            ]}) + "\n")
    math = tmp_path / "math.jsonl"
    with math.open("w") as f:
        for i in range(100):
            a, b = 13 + i, 2 * i + 5
            f.write(json.dumps({"id": f"m{i}", "query": f"A shop sells {a} apples on Monday and {b} on Tuesday. "
                                                        f"How many apples does it sell in total?",
                                "response": f"It sells {a} + {b} = {a + b} apples. The answer is: {a + b}"}) + "\n")
    return chats, math


def _config(tmp_path: Path, out: str, seed: int = 0, fraction: float | None = 0.2, general: bool = True) -> dict:
    chats, math = _general_files(tmp_path)
    sources = [{"name": "demo_mcq"}, {"name": "demo_qa"}, {"name": "demo_preference"}]
    if general:
        sources += [{"name": "smoltalk", "path": str(chats)},  # the registered hub source, read from a local file
                    {"name": "my_math", "path": str(math), "kind": "qa", "general": True, "license": "MIT",
                     "fields": {"question": "query", "answer": "response"}}]
    return {"name": "mix", "output": str(tmp_path / out), "seed": seed, "sources": sources,
            "dedup": {"near": False}, "decontam": {"enabled": False},
            "mixture": {"general_fraction": fraction, "validation_fraction": 0.1}}


def _write(tmp_path: Path, cfg: dict, name: str = "data.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def _rows(out: Path) -> list[dict]:
    rows = []
    for split in ("sft_train.jsonl", "sft_validation.jsonl"):
        rows += [json.loads(x) for x in (out / split).read_text().splitlines() if x.strip()]
    return rows


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "aloekit.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


# ---------------------------------------------------------------- registry

def test_registered_general_sources_are_hub_specs_with_licenses():
    general = {n: s for n, s in REGISTRY.items() if s.general}
    assert {"smoltalk", "metamathqa"} <= set(general)
    st, mm = REGISTRY["smoltalk"], REGISTRY["metamathqa"]
    assert (st.hub_id, st.hub_config, st.kind, st.license) == ("HuggingFaceTB/smoltalk", "all", "chat", "Apache-2.0")
    assert st.hub_fields == {"messages": "messages"}
    assert (mm.hub_id, mm.kind, mm.license) == ("meta-math/MetaMathQA", "qa", "MIT")
    assert mm.hub_fields == {"question": "query", "answer": "response"}
    assert not any(s.general for n, s in REGISTRY.items() if n not in general)  # medical sources stay medical
    assert is_general(SourceConfig(name="smoltalk")) and not is_general(SourceConfig(name="smoltalk", general=False))
    assert is_general(SourceConfig(name="x", path="x.jsonl", general=True))


def test_general_rows_are_tagged_and_rendered_without_medical_framing(tmp_path):
    chats, math = _general_files(tmp_path)
    rows = list(load_source(SourceConfig(name="smoltalk", path=str(chats)), None, BadRows(False)))
    assert len(rows) == 200 and all(r.kind == "chat" and "general" in r.tags for r in rows)
    assert rows[0].provenance["license"] == "Apache-2.0"
    qa = list(load_source(SourceConfig(name="m", path=str(math), kind="qa", general=True,
                                       fields={"question": "query", "answer": "response"}), None, BadRows(False)))
    assert all("general" in r.tags for r in qa)
    med = list(load_source(SourceConfig(name="demo_qa"), None, BadRows(False)))
    assert not any("general" in r.tags for r in med)
    for seed in range(3):
        for r in rows[:20] + qa[:20]:
            msgs, tid = render_sft(r, seed)
            assert msgs[0]["role"] == "user", tid  # no medical system prompt
            assert "medical" not in msgs[0]["content"].lower() and "patient" not in msgs[0]["content"].lower()
    # the CoT teacher prompt is medical: general MCQs stay out of the default pool
    g = Record("mcq", "g", "g:1", question="2 + 2?", options={"A": "4", "B": "5"}, answer="A", tags=["general"])
    m = Record("mcq", "m", "m:1", question="Aspirin inhibits?", options={"A": "COX", "B": "ACE"}, answer="A")
    assert select_pool([g, m], CotConfig(), 0) == [m]
    assert select_pool([g, m], CotConfig(sources=["g"]), 0) == [g]


# ---------------------------------------------------------------- the selection

def test_fraction_keeps_every_medical_row_and_input_order():
    recs = [Record("qa", "med", f"m{i}", question="q", answer="a") for i in range(300)]
    recs += [Record("qa", "gen", f"g{i}", question="q", answer="a") for i in range(500)]
    recs += [Record("preference", "pref", f"p{i}", prompt="p", chosen="c", rejected="r") for i in range(50)]
    for f in (0.0, 0.1, 0.2, 0.5):
        out, rep = apply_general_fraction(recs, {"gen"}, f, seed=0)
        gen = [r for r in out if r.source == "gen"]
        assert len(gen) == round(f / (1 - f) * 300) == rep["general_rows"]
        assert sum(r.source == "med" for r in out) == 300 and sum(r.kind == "preference" for r in out) == 50
        assert abs(rep["achieved_general_fraction"] - f) < 0.005 and rep["preference_rows"] == 50
        kept = {r.id for r in out}
        assert [r.id for r in out] == [r.id for r in recs if r.id in kept]  # a filter: input order kept
    # no fraction, or no general source: the records come back as they were
    assert apply_general_fraction(recs, {"gen"}, None, 0)[0] == recs
    assert apply_general_fraction(recs, set(), 0.2, 0)[0] == recs
    # seeded: the same seed picks the same rows, another seed other rows of the same number
    pick = {s: {r.id for r in apply_general_fraction(recs, {"gen"}, 0.2, s)[0] if r.source == "gen"} for s in (0, 1)}
    assert pick[0] == {r.id for r in apply_general_fraction(recs, {"gen"}, 0.2, 0)[0] if r.source == "gen"}
    assert pick[0] != pick[1] and len(pick[0]) == len(pick[1]) == 75


def test_too_little_general_data_keeps_it_all_and_says_so():
    recs = [Record("qa", "med", f"m{i}", question="q", answer="a") for i in range(100)]
    recs += [Record("qa", "gen", f"g{i}", question="q", answer="a") for i in range(10)]
    out, rep = apply_general_fraction(recs, {"gen"}, 0.5, seed=0)
    assert out == recs and rep["general_wanted"] == 100 and rep["general_offered"] == 10
    assert rep["achieved_general_fraction"] == round(10 / 110, 4)


# ---------------------------------------------------------------- end to end

def test_build_mixes_general_data_at_the_fraction_and_cards_it(tmp_path):
    out = run(load_config(DataConfig, _write(tmp_path, _config(tmp_path, "a"))))
    card = json.loads((out / "card.json").read_text())
    mix = card["mixture"]
    rows = _rows(out)
    gen_rows = [r for r in rows if "general" in r["tags"]]
    assert mix["general_fraction"] == 0.2
    assert mix["medical_rows"] == 100 and mix["general_offered"] == 300  # demo MCQ + QA; 200 chats + 100 problems
    assert len(gen_rows) == mix["general_rows"] == round(0.25 * mix["medical_rows"]) == 25
    assert len(rows) == mix["sft_rows"] == 125 and mix["achieved_general_fraction"] == 0.2
    assert {r["source"] for r in gen_rows} == {"smoltalk", "my_math"}  # both general sources contribute
    assert mix["by_source"]["smoltalk"]["domain"] == "general" and mix["by_source"]["demo_qa"]["domain"] == "medical"
    assert sum(v["rows"] for k, v in mix["by_source"].items() if v["domain"] == "general") == 25
    assert mix["preference_rows"] == 30 and "demo_preference" not in mix["by_source"]
    assert card["funnel"]["after_mixture"]["demo_preference"] == 30  # preference pairs are not sampled
    assert card["sources"]["smoltalk"]["license"] == "Apache-2.0" and card["sources"]["my_math"]["license"] == "MIT"
    assert all(r["messages"][0]["role"] == "user" for r in gen_rows)
    md = (out / "card.md").read_text()
    section = md.split("## Mixture")[1].split("\n## ")[0]
    assert "125 rows: 100 medical, 25 general-domain (general fraction 0.2, requested 0.2)" in section
    assert "| smoltalk | general |" in section and "| demo_mcq | medical |" in section
    assert "Short of general data" not in section and "Preference rows (30)" in section

    # the same seed gives the same mix byte for byte; another seed picks other general rows, as many
    again = run(load_config(DataConfig, _write(tmp_path, _config(tmp_path, "b"))))
    for rel in ("sft_train.jsonl", "sft_validation.jsonl", "card.md"):
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = run(load_config(DataConfig, _write(tmp_path, _config(tmp_path, "c", seed=1))))
    other_gen = {r["record_id"] for r in _rows(other) if "general" in r["tags"]}
    assert len(other_gen) == 25 and other_gen != {r["record_id"] for r in gen_rows}


def test_short_of_general_data_warns_and_cards_it(tmp_path):
    cfg = _config(tmp_path, "short", fraction=0.9)
    r = _cli("data", "build", _write(tmp_path, cfg))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warning: mixture: 300 general-domain rows for the 900" in " ".join(r.stderr.split())
    card = json.loads((tmp_path / "short" / "card.json").read_text())
    assert card["mixture"]["general_rows"] == 300 and card["mixture"]["medical_rows"] == 100
    assert "**Short of general data**: 300 general-domain rows for the 900" in (tmp_path / "short/card.md").read_text()


def test_without_general_fraction_the_mix_is_natural(tmp_path):
    out = run(load_config(DataConfig, _write(tmp_path, _config(tmp_path, "nat", fraction=None))))
    mix = json.loads((out / "card.json").read_text())["mixture"]
    assert mix["general_rows"] == 300 and mix["general_wanted"] is None and mix["achieved_general_fraction"] == 0.75
    assert "natural: no general_fraction set" in (out / "card.md").read_text()


# ---------------------------------------------------------------- bad configs

@pytest.mark.parametrize("case", ["above_one", "negative", "no_general_source", "only_general_sources"])
def test_bad_general_fraction_is_one_line_exit_2(case, tmp_path):
    cfg = _config(tmp_path, "bad", general=case != "no_general_source")
    if case == "above_one":
        cfg["mixture"]["general_fraction"] = 1.5
        expect = ["mixture.general_fraction", "less than 1"]
    elif case == "negative":
        cfg["mixture"]["general_fraction"] = -0.1
        expect = ["mixture.general_fraction", "greater than or equal to 0"]
    elif case == "no_general_source":
        expect = ["general_fraction 0.2 needs a general-domain source", "smoltalk", "metamathqa"]
    else:
        cfg["sources"] = [s for s in cfg["sources"] if s["name"] in ("smoltalk", "my_math")]
        expect = ["every source is general-domain"]
    r = _cli("data", "build", _write(tmp_path, cfg))
    one_line_error(r, *expect)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(UserError):
        load_config(DataConfig, _write(tmp_path, cfg, "again.yaml"))


def test_zero_fraction_without_general_source_is_allowed():
    cfg = DataConfig(sources=[SourceConfig(name="demo_qa")], mixture={"general_fraction": 0.0})
    assert cfg.mixture.general_fraction == 0.0


# ---------------------------------------------------------------- the paper configs

@pytest.mark.parametrize("name", ["aloe-llama3.1-8b.yaml", "aloe-qwen2.5-7b.yaml"])
def test_paper_configs_mix_general_data(name):
    recipe = yaml.safe_load((REPO / "configs" / name).read_text())
    cfg = DataConfig.model_validate(recipe["stages"]["data"]["config"])
    assert cfg.mixture.general_fraction == 0.2
    general = [s.name for s in cfg.sources if is_general(s)]
    assert {"smoltalk", "metamathqa"} <= set(general) and len(general) < len(cfg.sources)
