"""The `aloekit` command line. Heavy imports (torch, transformers) happen inside commands, so `--help` is fast."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import __version__
from . import console as con
from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="aloekit: build safe, strong medical assistant LLMs with the Aloe recipe.")
models_app = typer.Typer(no_args_is_help=True, help="List, prepare and inspect models.")
app.add_typer(models_app, name="models")


def _version(value: bool) -> None:
    if value:
        print(f"aloekit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or notes on stderr."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True)) -> None:
    con.set_quiet(quiet)


def _gen_config(config: Optional[Path], sets: Optional[List[str]], **flags):
    from .config import GenerateConfig, load_config
    names = {"model": "model.name", "backend": "model.backend", "dtype": "model.dtype",
             "batch_size": "model.batch_size", "max_new_tokens": "sampling.max_new_tokens",
             "temperature": "sampling.temperature", "top_p": "sampling.top_p", "seed": "seed", "system": "system"}
    overrides = list(sets or [])
    for k, v in flags.items():
        if v is not None:
            overrides.append(f"{names[k]}={json.dumps(v) if isinstance(v, str) else v}")
    cfg = load_config(GenerateConfig, config, overrides)
    cfg.sampling.seed = cfg.seed
    return cfg


MODEL_HELP = "Registry name (see `aloekit models list`), hub id, local HF folder or .gguf file."


@app.command()
def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="The user message."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    system: Optional[str] = typer.Option(None, "--system",
                                         help="System prompt: aloe_medical or text (default: the model's own)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="0 = greedy (default)."),
    top_p: Optional[float] = typer.Option(None, "--top-p"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="hf | vllm | llamacpp | openai"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto | bfloat16 | float16 | float32"),
    n: int = typer.Option(1, "--n", min=1, help="Number of samples."),
    raw: bool = typer.Option(False, "--raw", help="Send the prompt as-is, without the chat template."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with model/sampling/system keys."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key: key.sub=value."),
) -> None:
    """Answer one prompt and print the answer."""
    from .backends import load_backend
    cfg = _gen_config(config, sets, model=model, backend=backend, dtype=dtype, max_new_tokens=max_new_tokens,
                      temperature=temperature, top_p=top_p, seed=seed, system=system)
    from .prompts import resolve_system_prompt
    system = resolve_system_prompt(cfg.system, "--system")
    be = load_backend(cfg.model)
    if raw:
        item = prompt
    else:
        item = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    outs = be.generate([item], cfg.sampling, n=n)[0]
    for i, c in enumerate(outs):
        if n > 1:
            con.out.print(f"--- sample {i + 1}", highlight=False)
        con.out.print(c.text.strip(), highlight=False, markup=False)
    con.note(f"[dim]{outs[0].prompt_tokens} prompt tokens, "
             f"{sum(c.completion_tokens for c in outs)} generated[/dim]")


@app.command()
def chat(
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt: a name or text (default: aloe_medical)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
    temperature: Optional[float] = typer.Option(None, "--temperature"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    backend: Optional[str] = typer.Option(None, "--backend", "-b"),
    config: Optional[Path] = typer.Option(None, "--config", "-c"),
    sets: Optional[List[str]] = typer.Option(None, "--set"),
) -> None:
    """Talk to a model interactively (streams the answer). /reset clears the history, /exit or Ctrl-D quits."""
    from .backends import load_backend
    from .prompts import MEDICAL_SYSTEM_PROMPT, resolve_system_prompt
    cfg = _gen_config(config, sets, model=model, backend=backend, max_new_tokens=max_new_tokens,
                      temperature=temperature, seed=seed, system=system)
    text = resolve_system_prompt(cfg.system, "--system") if cfg.system else MEDICAL_SYSTEM_PROMPT
    be = load_backend(cfg.model)
    sys_msg = [{"role": "system", "content": text}] if text else []
    history: list[dict] = []
    interactive = sys.stdin.isatty()
    con.note(f"[bold]aloekit chat[/bold] with {cfg.model.name} ({cfg.model.backend}). /exit to quit.")
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            history.clear()
            continue
        history.append({"role": "user", "content": line})
        print("assistant> ", end="", flush=True)
        pieces = []
        for piece in be.stream_chat(sys_msg + history, cfg.sampling):
            pieces.append(piece)
            print(piece, end="", flush=True)
        print(flush=True)
        history.append({"role": "assistant", "content": "".join(pieces).strip()})


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Registered models."""
    from dataclasses import asdict

    from rich.table import Column, Table

    from .models import REGISTRY, models_dir
    if as_json:
        print(json.dumps([asdict(s) for s in REGISTRY.values()], indent=2))
        return
    t = Table(Column("name", no_wrap=True), "params", "prepared", Column("hub id", overflow="fold"),
              Column("notes", overflow="fold"))
    for s in REGISTRY.values():
        prepared = "yes" if (models_dir() / s.name / "aloekit_source.json").is_file() else ""
        t.add_row(s.name, s.params, prepared, s.hub_id, s.description)
    con.out.print(t)


@models_app.command("prepare")
def models_prepare(name: str = typer.Argument("smollm2-135m-instruct", help=MODEL_HELP),
                   force: bool = typer.Option(False, "--force", help="Convert again even if cached.")) -> None:
    """Make a model loadable offline (converts the packaged GGUF once); prints its folder."""
    from .models import prepare
    con.note(f"preparing {name} ...")
    print(prepare(name, force=force))


@models_app.command("info")
def models_info(name: str = typer.Argument(..., help=MODEL_HELP)) -> None:
    """Details of one model as JSON."""
    from .models import info
    print(json.dumps(info(name), indent=2))


@app.command()
def env() -> None:
    """Versions, device and cache folders."""
    import os

    import torch

    from .models import aloekit_home
    from .paths import data_dir
    from .rundir import git_sha, versions
    info = {
        "versions": versions(),
        "git_sha": git_sha(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_threads": torch.get_num_threads(),
        "bf16_cpu": True,
        "aloekit_home": str(aloekit_home()),
        "hf_home": os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface")),
        "data_dir": str(data_dir(required=False) or "(not found; set ALOEKIT_DATA_DIR)"),
    }
    print(json.dumps(info, indent=2))


@app.command()
def demo(
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help=MODEL_HELP),
    output: Path = typer.Option(Path("runs/demo"), "--output", "-o", help="Run directory to write."),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Quick check: prepare the default model and answer the bundled medical questions (the main job is `run`)."""
    from importlib.resources import files

    from .backends import load_backend
    from .config import GenerateConfig, ModelConfig, SamplingConfig
    from .io import atomic_write_jsonl
    from .prompts import MEDICAL_SYSTEM_PROMPT
    from .rundir import RunDir

    cfg = GenerateConfig(model=ModelConfig(name=model), system=MEDICAL_SYSTEM_PROMPT, seed=seed,
                         sampling=SamplingConfig(max_new_tokens=max_new_tokens, seed=seed))
    questions = [json.loads(x) for x in files("aloekit").joinpath("resources/demo_questions.jsonl")
                 .read_text().splitlines() if x.strip()]
    run = RunDir(output, "demo", cfg, seed=seed)
    with run.timed("load"):
        be = load_backend(cfg.model)
    chats = [[{"role": "system", "content": cfg.system}, {"role": "user", "content": q["question"]}]
             for q in questions]
    with run.timed("generate"):
        outs = be.generate(chats, cfg.sampling)
    rows = []
    for q, o in zip(questions, outs):
        c = o[0]
        rows.append({**q, "answer": c.text.strip(), "prompt_tokens": c.prompt_tokens,
                     "completion_tokens": c.completion_tokens})
        con.out.print(f"\n[bold]Q:[/bold] {q['question']}", highlight=False)
        con.out.print(f"[bold]A:[/bold] {c.text.strip()}", highlight=False)
    atomic_write_jsonl(run.output("answers", "answers.jsonl"), rows)
    gen_tokens = sum(r["completion_tokens"] for r in rows)
    run.finish(tokens_generated=gen_tokens,
               tokens_per_s=round(gen_tokens / max(run.timings["generate"], 1e-9), 1))
    con.note(f"\n[dim]{gen_tokens} tokens in {run.timings['generate']:.1f}s; wrote {output}/[/dim]")


# --- stage commands: each stage package registers its own verbs ---
for _stage in ("data", "train", "merge", "redteam", "medprompt", "rag", "serve"):
    importlib.import_module(f".{_stage}.cli", __package__).register(app)


def _strategy_answerer(strategy: str, **kw):
    """`aloekit eval --strategy`: the medprompt package answers, the eval package scores (neither imports the
    other; this module composes them). The strategy's system prompt: `system_prompt=` (eval's knob), else
    `params["system_prompt"]` (or its older key `system`)."""
    from .medprompt.runner import StrategyAnswerer
    return StrategyAnswerer(strategy, **kw)


class _AloekitHF:
    """`aloekit eval --tasks <lm-eval task>`: lm-eval runs the task and the lmeval package's aloekit-hf model answers
    on the backend eval has loaded (eval.harness.LMEvalModel; neither package imports the other)."""

    name = "aloekit-hf"
    FROM_CONFIG = ("pretrained", "dtype", "batch_size", "device", "seed")  # --model, --dtype, --batch-size, --seed

    def task_paths(self) -> list[Path]:
        from .lmeval import TASKS_DIR
        return [TASKS_DIR]

    def check(self, model, args: dict) -> None:
        from .lmeval.model import MODEL_ARGS
        unknown = sorted(set(args) - set(MODEL_ARGS))
        if unknown:
            takes = ", ".join(a for a in MODEL_ARGS if a not in self.FROM_CONFIG)
            raise UserError(f"--model-args {', '.join(unknown)}: not a model argument of {self.name}, which takes "
                            f"{takes} (the rest come from --model, --dtype, --batch-size and --seed)")
        fixed = sorted(set(args) & set(self.FROM_CONFIG))
        if fixed:
            raise UserError(f"--model-args {', '.join(fixed)}: set it with --model, --dtype, --batch-size or --seed")
        length, bos = args.get("max_length", 1), args.get("add_bos_token", False)
        if not isinstance(length, int) or isinstance(length, bool) or length < 1 or not isinstance(bos, bool):
            raise UserError(f"--model-args: max_length takes a number of tokens, add_bos_token true or false (got "
                            f"{', '.join(f'{k}={v}' for k, v in args.items())})")

    def build(self, model, backend, seed: int, args: dict):
        from .lmeval.model import model_class
        try:
            return model_class()(pretrained=model.name, dtype=model.dtype, batch_size=model.batch_size,
                                 device=model.device, seed=seed, backend=backend, **args)
        except ValueError as e:  # a model argument's value aloekit-hf refuses
            raise UserError(f"--model-args: {e}") from None


importlib.import_module(".eval.cli", __package__).register(app, strategies=_strategy_answerer,
                                                           lm_eval_model=_AloekitHF())


@app.command("run")
def run_cmd(
    recipe: Path = typer.Argument(..., help="Recipe YAML (configs/demo.yaml, configs/aloe-llama3.1-8b.yaml)."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Override a recipe key: key.sub=value"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run directory (default: recipe's)."),
    from_: Optional[str] = typer.Option(None, "--from", help="Start at this stage (earlier ones must be done)."),
    until: Optional[str] = typer.Option(None, "--until", help="Stop after this stage (and its evaluation)."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Run only these stages (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Rerun the selected stages even if finished."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the plan with estimates."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip the HTML report and model card."),
    push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", help="Upload the final model + card "
                                              "to this hub repo (org/name) when the run passes."),
    public: bool = typer.Option(False, "--public", help="With --push-to-hub: a public repo (default private)."),
    machine_rank: Optional[int] = typer.Option(None, "--machine-rank", help="This machine's rank in the stages "
                                               "launched on several machines (launch.num_machines > 1), e.g. "
                                               "$SLURM_NODEID. Above 0: join only those stages when machine 0 "
                                               "launches them (shared filesystem); machine 0 runs the rest."),
    main_process_ip: Optional[str] = typer.Option(None, "--main-process-ip", help="Address of machine 0 for "
                                                  "multi-machine stages (e.g. the first host of the Slurm job)."),
    main_process_port: Optional[int] = typer.Option(None, "--main-process-port", help="Rendezvous port on "
                                                    "machine 0 for multi-machine stages (default 29500)."),
    join_timeout: float = typer.Option(24 * 3600.0, "--join-timeout", help="Seconds a machine of rank > 0 waits "
                                       "for machine 0 to launch each stage."),
) -> None:
    """Run a recipe: data -> sft -> merge -> dpo -> redteam -> dpo -> eval -> report, skipping finished stages."""
    from .config import load_config
    from .recipe import GateFailed, RecipeConfig
    from .recipe import run as run_recipe
    from .recipe.run import Machine
    cfg = load_config(RecipeConfig, recipe, sets)
    report = cfg.report and not no_report
    if push_to_hub and not report:
        raise UserError("--push-to-hub needs the model card: drop --no-report")
    if join_timeout <= 0:
        raise UserError(f"--join-timeout: {join_timeout:g} is not a number of seconds above 0")
    machine = Machine(machine_rank, main_process_ip, main_process_port, join_timeout)
    kw = dict(recipe_file=str(recipe), output=str(output) if output else None, from_=from_, until=until, only=only,
              force=force, machine=machine)
    if dry_run:
        run_recipe(cfg, dry_run=True, **kw)
        return
    try:
        result = run_recipe(cfg, **kw)
    except GateFailed:
        if report:  # a run stopped by a gate needs its report most; nothing is pushed
            _report(Path(output or cfg.output), None, not public)
        raise
    if "joined" in result:  # a machine of rank > 0: machine 0 writes the report and says how to serve the model
        return
    if report:
        _report(Path(output or cfg.output), push_to_hub, not public)
    if not (from_ or until or only):  # a whole run ends with a released model: say how to try it
        con.note(f"serve it: aloekit serve {output or cfg.output}   (OpenAI API + chat page; docs/serve.md)")


def _report(run_dir: Path, push_repo: Optional[str], private: bool) -> None:
    from .report import run as write_report_and_card
    done = write_report_and_card(run_dir, push_repo=push_repo, private=private)
    con.note(f"report: {done['report']}\nmodel card: {done['model_card']}")
    if done["pushed"]:
        con.note(f"pushed to {done['pushed']} ({'private' if private else 'public'})")


def main() -> None:
    try:
        app()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
