"""`aloekit redteam`: only rates and counts reach the terminal; harmful text goes to files in the run dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def redteam(
        config: Optional[Path] = typer.Argument(None, help="YAML config (see configs/redteam_demo.yaml)."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Model to attack (registry name, hub "
                                            "id or local folder)."),
        budget: Optional[int] = typer.Option(None, "--budget", "-n", help="Number of (request, attack) attempts."),
        attacks: Optional[str] = typer.Option(None, "--attacks", help="Comma-separated attack ids, "
                                              "'programmatic', 'templates' or family:<name>."),
        judges: Optional[str] = typer.Option(None, "--judges", help="Comma-separated: marker,llm,llamaguard; "
                                             "the first one decides ASR."),
        max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size"),
        seed: Optional[int] = typer.Option(None, "--seed"),
        system_prompt: Optional[str] = typer.Option(None, "--system-prompt", help="A registered name "
                                                    "(aloe_medical), the prompt's text, or 'none'."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Shared data folder (default "
                                                "$ALOEKIT_DATA_DIR or ../shared/data)."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run directory."),
        sets: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key: key.sub=value."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary JSON instead of a table."),
    ) -> None:
        """Attack a model with jailbreaks x harmful requests; write report, ASR tables and safety DPO pairs."""
        from .. import console as con
        from ..config import load_config
        from ..prompts import resolve_system_prompt
        from .config import RedteamConfig
        from .run import run

        overrides = list(sets or [])
        flags = {"model.name": model, "budget": budget, "sampling.max_new_tokens": max_new_tokens,
                 "model.batch_size": batch_size, "seed": seed,
                 "data_dir": str(data_dir) if data_dir else None, "output": str(output) if output else None}
        overrides += [f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in flags.items() if v is not None]
        if attacks:
            overrides.append(f"attacks={json.dumps([a.strip() for a in attacks.split(',') if a.strip()])}")
        if judges:
            overrides.append(f"judges={json.dumps([j.strip() for j in judges.split(',') if j.strip()])}")
        cfg = load_config(RedteamConfig, config, overrides)
        if system_prompt is not None:  # set after loading: it wins over the YAML's system or system_prompt key
            resolve_system_prompt(system_prompt, "--system-prompt")
            cfg.system = system_prompt
        summary = run(cfg)
        if as_json:
            print(json.dumps(summary, indent=2))
            return
        _print_summary(con, summary, cfg.output)


def _print_summary(con, s: dict, output: str) -> None:
    from rich.table import Table

    from .metrics import set_name

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    a = s["attacks"]
    t = Table(title=f"red team: {s['model']} ({a['n']} attempts, judge {s['primary_judge']}, system prompt "
                    f"{s['system_prompt']})")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("attack success rate", pct(a["asr"]))
    t.add_row("refusal rate under attack", pct(a["refusal_rate"]))
    if "over_refusal" in s:
        o = s["over_refusal"]
        t.add_row(f"{set_name(o, 'xstest')} over-refusal ({o['n']} safe prompts)", pct(o["refusal_rate"]))
    if "medsafety_refusal" in s:
        m = s["medsafety_refusal"]
        t.add_row(f"{set_name(m, 'medsafetybench')} {m['split']} refusal ({m['n']}, no attack)", pct(m["refusal_rate"]))
    for name, v in s.get("agreement", {}).items():
        t.add_row(f"agreement {name}", f"{pct(v['agreement'])} (kappa {v['kappa']})")
    if "pairs" in s:
        t.add_row("safety DPO pairs", str(s["pairs"]["n"]))
    con.out.print(t)
    fam = Table(title="ASR per source / attack family")
    fam.add_column("group")
    fam.add_column("n", justify="right")
    fam.add_column("ASR", justify="right")
    for k, v in a["per_source"].items():
        fam.add_row(f"source {k}", str(v["n"]), pct(v["rate"]))
    for k, v in a["per_family"].items():
        fam.add_row(f"family {k}", str(v["n"]), pct(v["rate"]))
    con.out.print(fam)
    con.note(f"[dim]wrote {output}/ (report.jsonl, summary.json, summary.md, pairs.jsonl, pairs_hf/)[/dim]")
