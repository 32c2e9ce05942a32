"""`aloekit eval --log-to wandb|mlflow` (eval/tracking.py): a fast evaluation (the bundled demo set, 6 questions, a
tiny random Llama) logged offline to W&B and to a local MLflow file store, read back from what they wrote."""

import json
import struct

import pytest
from conftest import save_tiny_llama

from aloekit.errors import UserError

pytest.importorskip("wandb")
pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, real_tokenizer):
    return save_tiny_llama(tmp_path_factory.mktemp("tracking_tiny"), real_tokenizer)


def evaluate(tiny_dir, out, log_to):
    from aloekit.config import ModelConfig
    from aloekit.eval.runner import EvalConfig, run
    return run(EvalConfig(model=ModelConfig(name=str(tiny_dir), dtype="float32"), tasks=["aloekit_demo"], limit=6,
                          output=str(out) if out else None, log_to=log_to))


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """No W&B account, nothing written outside tmp_path."""
    for k in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_DIR"):
        monkeypatch.delenv(k, raising=False)
    for k in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "HOME"):
        monkeypatch.setenv(k, str(tmp_path / "home" / k.lower()))


def wandb_records(path):
    """The protobuf records of an offline run's .wandb file (a LevelDB-style log: 7-byte file header, 32 KiB
    blocks, each record split into chunks with a 7-byte header: crc32, length, type full/first/middle/last)."""
    from wandb.proto import wandb_internal_pb2 as pb
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, out, buf = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def results_artifact(records):
    """The `results` artifact (each samples table is an artifact of its own too)."""
    (art,) = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact" and r.artifact.name == "results"]
    return art


def test_wandb_offline_run_has_metrics_samples_and_results(tiny_dir, tmp_path, offline_wandb):
    """No WANDB_MODE and no API key: an offline run under the output folder, with every task metric in its history
    and summary, the samples table, the config, and the results artifact (results.json + samples file)."""
    out = tmp_path / "out"
    res = evaluate(tiny_dir, out, ["wandb"])
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = wandb_records(next(runs[0].glob("run-*.wandb")))
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.summary.update})
    for metric in ("acc", "acc_norm", "acc_stderr"):
        assert summary[f"aloekit_demo/{metric}"] == pytest.approx(res["results"]["aloekit_demo"][f"{metric},none"])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.project == "aloekit"
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["tasks"] == "aloekit_demo" and config["limit"] == 6 and config["dtype"] == "float32"
    tables = list((runs[0] / "files" / "media" / "table" / "samples").glob("aloekit_demo_*.table.json"))
    table = json.loads(tables[0].read_text())
    assert len(table["data"]) == 6 and {"doc_id", "gold", "pred", "acc"} <= set(table["columns"])
    artifact = results_artifact(records)
    assert artifact.type == "eval_results"
    assert {c.path for c in artifact.manifest.contents} == {"results.json", "samples_aloekit_demo.jsonl"}


def test_mlflow_file_store_has_params_metrics_and_artifacts(tiny_dir, tmp_path, monkeypatch):
    """No MLFLOW_TRACKING_URI: a file store under the output folder; read back with mlflow's client."""
    import mlflow
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")  # recorded, so what the run sets is undone after the test
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    out = tmp_path / "out"
    res = evaluate(tiny_dir, out, ["mlflow"])
    store = (out / "mlruns").as_uri()
    client = mlflow.MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("aloekit")
    (run,) = client.search_runs([exp.experiment_id])
    want = res["results"]["aloekit_demo"]
    for metric in ("acc", "acc_norm", "acc_stderr"):
        assert run.data.metrics[f"aloekit_demo/{metric}"] == pytest.approx(want[f"{metric},none"])
    assert run.data.params["model"] == str(tiny_dir) and run.data.params["tasks"] == "aloekit_demo"
    assert run.data.params["limit"] == "6" and run.data.params["dtype"] == "float32"
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert arts == {"results.json", "samples"}
    local = client.download_artifacts(run.info.run_id, "results.json", str(tmp_path / "dl"))
    assert json.loads(open(local).read())["results"]["aloekit_demo"]["acc,none"] == want["acc,none"]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "samples")] == \
        ["samples/samples_aloekit_demo.jsonl"]


def test_without_output_folder_both_trackers_get_the_files(tiny_dir, tmp_path, monkeypatch, offline_wandb):
    """No --output: W&B and MLflow (MLFLOW_TRACKING_URI given) get results.json and the samples from memory."""
    import mlflow
    store = (tmp_path / "store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.chdir(tmp_path)
    evaluate(tiny_dir, None, ["wandb", "mlflow"])
    client = mlflow.MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("aloekit").experiment_id])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"results.json", "samples"}
    (wb,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    artifact = results_artifact(wandb_records(next(wb.glob("run-*.wandb"))))
    assert {c.path for c in artifact.manifest.contents} == {"results.json", "samples_aloekit_demo.jsonl"}


def test_missing_package_and_unknown_tracker_fail_before_the_evaluation(monkeypatch):
    import importlib.util

    from pydantic import ValidationError

    from aloekit.eval import tracking
    from aloekit.eval.runner import EvalConfig, run
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(UserError, match=r"--log-to mlflow needs the 'tracking' extra .*pip install 'aloekit\[tracking\]'"):
        run(EvalConfig(tasks=["aloekit_demo"], log_to=["wandb", "mlflow"], model={"name": "/nonexistent"}))
    tracking.check(["wandb"])
    with pytest.raises(ValidationError):
        EvalConfig(log_to=["tensorboard"])


def test_cli_log_to_flag_is_a_comma_list(tiny_dir, tmp_path, offline_wandb, monkeypatch):
    import subprocess
    import sys
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "store").as_uri())
    r = subprocess.run([sys.executable, "-m", "aloekit.cli", "eval", "--tasks", "aloekit_demo", "--limit", "2",
                        "--model", str(tiny_dir), "--dtype", "float32", "--log-to", "wandb,mlflow",
                        "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "--log-to wandb: offline run" in r.stderr and "--log-to mlflow: run " in r.stderr
    r = subprocess.run([sys.executable, "-m", "aloekit.cli", "eval", "--tasks", "aloekit_demo", "--log-to", "neptune"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "log_to" in r.stderr and "Traceback" not in r.stderr
