"""`aloekit data ...` verbs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

data_app = typer.Typer(no_args_is_help=True, help="Curate training data: build, decontaminate, synthetic CoT.")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


@data_app.command("build")
def build(config: Path = typer.Argument(..., help="data.yaml recipe."),
          output: Optional[str] = typer.Option(None, "--output", "-o", help="Run directory (overrides output)."),
          seed: Optional[int] = typer.Option(None, "--seed"),
          data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Shared data folder."),
          sets: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key: key.sub=value.")
          ) -> None:
    """Build the SFT (and preference) dataset and its data card. Rerun the same command to resume CoT."""
    from ..config import load_config
    from .pipeline import DataConfig, run
    over = list(sets or [])
    over += [f"output={json.dumps(output)}"] if output else []
    over += [f"seed={seed}"] if seed is not None else []
    over += [f"data_dir={json.dumps(data_dir)}"] if data_dir else []
    cfg = load_config(DataConfig, config, over)
    out = run(cfg)
    print(out / "card.md")


@data_app.command("decontam")
def decontam(dataset: str = typer.Option(..., "--dataset", "-d",
                                         help="JSONL file, save_to_disk folder, or registered source name."),
             n: int = typer.Option(13, "--n", help="n-gram length (words)."),
             benchmarks: Optional[List[str]] = typer.Option(None, "--benchmark", "-b",
                                                            help="Benchmark to check (repeatable; default all)."),
             data_dir: Optional[str] = typer.Option(None, "--data-dir"),
             output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the report here."),
             ) -> None:
    """Audit any dataset for overlap with the benchmarks' test splits; prints a JSON report."""
    from ..errors import UserError
    from ..io import atomic_write_json
    from .decontam import DecontamConfig, audit
    if n < 3:
        raise UserError("--n must be at least 3")
    rep = audit(dataset, DecontamConfig(n=n, benchmarks=list(benchmarks) if benchmarks else ["all"]), data_dir)
    if output:
        atomic_write_json(output, rep)
    print(json.dumps(rep, indent=2))


@data_app.command("cot")
def cot(input: str = typer.Option(..., "--input", "-i", help="Canonical records JSONL or registered MCQ source."),
        output: Path = typer.Option(Path("runs/cot"), "--output", "-o"),
        model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="Teacher model."),
        backend: str = typer.Option("hf", "--backend", "-b"),
        max_records: int = typer.Option(16, "--max-records"),
        max_attempts: int = typer.Option(2, "--max-attempts"),
        max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
        seed: int = typer.Option(0, "--seed"),
        data_dir: Optional[str] = typer.Option(None, "--data-dir"),
        ) -> None:
    """Synthetic chain of thought for MCQs, kept only when it reaches the gold answer. Resumable."""
    from ..config import ModelConfig, SamplingConfig
    from ..errors import UserError
    from ..io import atomic_write_json, atomic_write_jsonl
    from ..rundir import RunDir
    from .cot import CotConfig, generate_cot, select_pool
    from .decontam import load_any
    cfg = CotConfig(enabled=True, teacher=ModelConfig(name=model, backend=backend), max_records=max_records,
                    max_attempts=max_attempts, sampling=SamplingConfig(max_new_tokens=max_new_tokens))
    run = RunDir(output, "data-cot", cfg, seed=seed)
    pool = select_pool(load_any(input, data_dir), cfg, seed)
    if not pool:
        raise UserError(f"--input {input}: no MCQ records with options and a gold answer")
    with run.timed("cot"):
        rep = generate_cot(pool, cfg, output / "cache" / "cot.jsonl", seed)
    atomic_write_jsonl(run.output("records", "cot_records.jsonl"), [r.to_dict() for r in pool])
    atomic_write_json(run.output("report", "cot_report.json"), rep)
    run.finish(**{k: rep[k] for k in ("pool", "accepted", "acceptance_rate")})
    print(json.dumps(rep, indent=2))


@data_app.command("sources")
def sources() -> None:
    """Registered sources and benchmarks."""
    from rich.table import Table

    from .. import console as con
    from .decontam import BENCHMARKS
    from .sources import REGISTRY
    t = Table("source", "kind", "domain", "local", "hub", "license", "description")
    for s in REGISTRY.values():
        t.add_row(s.name, s.kind, "general" if s.general else "medical", s.local or "", s.hub_id or "", s.license,
                  s.description)
    con.out.print(t)
    b = Table("benchmark (decontam)", "local test split", "hub")
    for x in BENCHMARKS.values():
        b.add_row(x.name, x.local or "(hub only)", x.hub_id)
    con.out.print(b)
