"""The held-out safety split: frozen ids resolve to the exact texts they were frozen on, a changed text stops the
run, it shares no request with what safety training or tuning reads, and the safety recipe measures on it."""

import json
import sys

import pytest
from conftest import REPO

from aloekit.config import load_config
from aloekit.errors import UserError
from aloekit.recipe.config import RecipeConfig
from aloekit.redteam.requests import SourceConfig, keep_frozen, load_source, load_xstest, resolve, text_sha256

FROZEN = "pkg:resources/safety_holdout/requests.json"
sys.path.insert(0, str(REPO / "scripts"))


def frozen() -> dict:
    return json.loads(resolve(FROZEN).read_text())


def test_frozen_ids_resolve_to_their_texts(data_dir):
    root = data_dir
    hb = load_source(SourceConfig(name="harmbench", split="test", ids_file=FROZEN), root)
    sst = load_source(SourceConfig(name="simplesafetytests", ids_file=FROZEN), root)
    manifest = frozen()
    assert len(hb) == manifest["harmful"]["harmbench"] > 50 and len(sst) == manifest["harmful"]["simplesafetytests"]
    listed = {e["id"]: e["sha256"] for e in manifest["requests"]}
    assert {r.id for r in hb + sst} == set(listed)
    assert all(text_sha256(r.text) == listed[r.id] for r in hb + sst)
    all_test = load_source(SourceConfig(name="harmbench", split="test"), root)
    assert len(hb) < len(all_test)  # close copies of used requests were left out


def test_changed_text_or_missing_id_stops(tmp_path, data_dir):
    reqs = load_source(SourceConfig(name="simplesafetytests"), data_dir)
    f = tmp_path / "frozen.json"
    f.write_text(json.dumps({"requests": [{"id": reqs[0].id, "sha256": text_sha256(reqs[0].text + " edited")}]}))
    with pytest.raises(UserError, match="1 changed"):
        keep_frozen(reqs, str(f), "simplesafetytests")
    f.write_text(json.dumps({"requests": [{"id": "sst/not_there", "sha256": "0"}]}))
    with pytest.raises(UserError, match="1 frozen request.s. missing"):
        keep_frozen(reqs, str(f), "simplesafetytests")
    f.write_text("[1, 2]")
    with pytest.raises(UserError, match="not a frozen request list"):
        keep_frozen(reqs, str(f), "simplesafetytests")


def test_held_out_is_far_from_everything_training_reads(data_dir):
    from freeze_safety_holdout import MAX_JACCARD, USED_HARMFUL, bundled_prompts, closest, content_words
    root = data_dir
    used = [content_words(r.text) for s in USED_HARMFUL for r in load_source(s, root)]
    used += [content_words(t) for t in bundled_prompts()]
    hb = load_source(SourceConfig(name="harmbench", split="test", ids_file=FROZEN), root)
    assert max(closest(r.text, used) for r in hb[:40]) < MAX_JACCARD
    safe = load_xstest(root, source="safe_medical")
    assert len(safe) == 60 and len({r.text for r in safe}) == 60
    xs = [content_words(r.text) for r in load_xstest(root, source="xstest")]
    xs += [content_words(r.text) for r in load_xstest(root, source="demo_safe")]
    assert max(closest(r.text, xs) for r in safe) < MAX_JACCARD


def test_safety_recipe_measures_on_the_held_out_split():
    cfg = load_config(RecipeConfig, REPO / "configs" / "safety_dpo.yaml", [])
    safety = cfg.evaluation.safety
    assert {s["name"] for s in safety["sources"]} == {"harmbench", "simplesafetytests"}
    assert all(s["ids_file"] == FROZEN for s in safety["sources"])
    assert safety["xstest"]["source"] == "safe_medical"
    train_sources = cfg.stages["redteam"].config["sources"]
    assert not {s["name"] for s in train_sources} & {"harmbench", "simplesafetytests"}
    assert "safe_medical" in cfg.stages["redteam"].config["pairs"]["retain"]["exclude_similar_to"]
