import os

import pytest

from aloekit.config import GenerateConfig, load_config, parse_overrides
from aloekit.errors import UserError
from aloekit.io import atomic_dir, atomic_write_text


def test_overrides_parse_nested_and_typed():
    assert parse_overrides(["a.b=1", "a.c=x", "d=[1, 2]", "e=true"]) == {"a": {"b": 1, "c": "x"}, "d": [1, 2],
                                                                     "e": True}
    with pytest.raises(UserError, match="key.sub=value"):
        parse_overrides(["novalue"])


def test_yaml_then_overrides_precedence(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("model:\n  name: my-model\n  batch_size: 4\nsampling:\n  max_new_tokens: 10\n")
    cfg = load_config(GenerateConfig, p, ["sampling.max_new_tokens=20"])
    assert (cfg.model.name, cfg.model.batch_size, cfg.sampling.max_new_tokens) == ("my-model", 4, 20)


def test_unknown_key_lists_valid_keys(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("sampling:\n  max_tokens: 10\n")
    with pytest.raises(UserError) as e:
        load_config(GenerateConfig, p)
    msg = str(e.value)
    assert "unknown key 'sampling.max_tokens'" in msg and "max_new_tokens" in msg and "\n" not in msg


def test_bad_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  name: [unclosed\n")
    with pytest.raises(UserError, match=r"bad.yaml line \d+: invalid YAML"):
        load_config(GenerateConfig, p)


def test_bad_value_type(tmp_path):
    with pytest.raises(UserError, match="sampling.max_new_tokens"):
        load_config(GenerateConfig, None, ["sampling.max_new_tokens=-3"])


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with atomic_dir(tmp_path / "out") as d:
            (d / "half.bin").write_text("x")
            raise Boom()
    assert os.listdir(tmp_path) == []
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello" and os.listdir(tmp_path) == ["a.txt"]


def test_unwritable_location_is_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot create directory"):
        atomic_write_text(blocker / "sub" / "a.txt", "x")


def test_unknown_key_inside_a_list_item_lists_that_items_keys():
    from aloekit.train.config import DPOConfig
    with pytest.raises(UserError, match=r"unknown key 'stages.0.betta'; valid keys here: beta, dataset"):
        load_config(DPOConfig, None, ["stages=[{name: a, dataset: b, betta: 1}]"])
