"""`write_report(run_dir)`: one self-contained report.html for a recipe run.

No external URL anywhere: CSS is inline and plots are base64 PNGs, so the file can be mailed or archived alone.
Every string that comes from the run (names, messages, paths, YAML) goes through html.escape.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..io import atomic_write_text
from . import plots
from .rundata import (
    EVALUATION,
    MEDPROMPT_RESULTS,
    NOT_RECORDED,
    Run,
    attack_counts,
    benchmark_table,
    eval_details,
    headline,
    load,
    per_attack,
    percent_metric,
    prompt_labels,
    safety_prompt,
    safety_rows,
    tokens,
    training_runs,
)

# the data card's funnel levels, in pipeline order (bad_rows_skipped is a count, not a level)
FUNNEL = ["loaded", "after_clean", "after_exact_dedup", "after_near_dedup", "after_decontam", "after_mixture"]

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330; margin: 0;
       background: #f5f6f8; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 6px; }
h2 { font-size: 18px; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #e3e6ec; }
h3 { font-size: 15px; margin: 18px 0 6px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; }
th, td { border: 1px solid #d9dde5; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #eef1f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.fail td { background: #fdecec; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 3px 16px; margin: 10px 0; }
dl.meta dt { font-weight: 600; color: #4a5263; } dl.meta dd { margin: 0; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.ok { background: #dff3e4; color: #1d6b34; } .bad { background: #fbdada; color: #9b1c1c; }
.warn { background: #fff1cc; color: #7a5300; } .muted { background: #eceef2; color: #555d6e; }
.banner { border: 2px solid #c0392b; background: #fdecec; padding: 12px 16px; border-radius: 6px; margin: 14px 0; }
.banner h2 { border: 0; margin: 0 0 6px; color: #9b1c1c; }
.absent { color: #6b7384; font-style: italic; }
img.plot { max-width: min(100%, 900px); border: 1px solid #e3e6ec; margin: 6px 0; }
pre { background: #f4f5f7; padding: 10px; overflow-x: auto; font-size: 12px; }
"""


class Raw(str):
    """Markup built here (badges, links to sections): table() does not escape it."""


def e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def num(v: Any, pct: bool = False, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if pct:
        return f"{100 * v:.1f}%"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"


def badge(text: str, cls: str) -> Raw:
    return Raw(f'<span class="badge {cls}">{e(text)}</span>')


STATUS_CLASS = {"done": "ok", "cached": "ok", "running": "warn", "failed": "bad", "gate_failed": "bad",
                "pending": "muted", "skipped": "muted"}


def status_badge(status: str) -> Raw:
    return badge(status, STATUS_CLASS.get(status, "muted"))


def table(header: list[Any], rows: Iterable[list[Any]], row_classes: list[str] | None = None,
          numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    cell = lambda c: c if isinstance(c, Raw) else e(c)  # noqa: E731
    out = ["<table>", "<tr>" + "".join(f"<th>{cell(h)}</th>" for h in header) + "</tr>"]
    for i, r in enumerate(rows):
        cls = f' class="{e(row_classes[i])}"' if row_classes and row_classes[i] else ""
        tds = "".join(f'<td class="num">{cell(c)}</td>' if j in numeric else f"<td>{cell(c)}</td>"
                      for j, c in enumerate(r))
        out.append(f"<tr{cls}>{tds}</tr>")
    return "\n".join(out + ["</table>"])


def img(b64: str, alt: str) -> str:
    return f'<img class="plot" alt="{e(alt)}" src="data:image/png;base64,{b64}">'


def absent(run: Run, name: str, what: str) -> str:
    """Why a section is empty: no stage of the section is in the recipe, or it did not run (and why)."""
    stages = run.section(name, ran=False)
    if not stages:
        return f'<p class="absent">No {e(name)} stage in this recipe: no {e(what)}.</p>'
    missing = [s for s in stages if not s.ran]
    if not missing:
        return f'<p class="absent">The {e(name)} stages ran but recorded no {e(what)}.</p>'
    return "".join(f'<p class="absent">Stage {e(s.name)} did not run ({e(s.status)}): no {e(what)}.</p>'
                   for s in missing)


def section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{anchor}"><h2>{e(title)}</h2>\n' + "\n".join(p for p in parts if p) + "</section>"


# ---------------------------------------------------------------- sections


def header(run: Run) -> str:
    m = run.manifest
    models = m.get("models") or {}
    wall = run.wall_seconds()
    counts: dict[str, int] = {}
    for s in run.stages:
        counts[s.status] = counts.get(s.status, 0) + 1
    final = m.get("final_model")
    made_by = next((s for s in run.stages if final and s.model_dir == final), None)
    held = run.stopped_by and made_by is not None and run.stopped_by.get("stage") == made_by.name
    items = [("status", status_badge(run.status)), ("seed", e(m.get("seed"))),
             *((f"{k} model", e(v)) for k, v in models.items()),
             ("final model", Raw(e(final or "none") + (" " + badge("not promoted: its gate failed", "bad")
                                                       if held else ""))),
             ("started", e(m.get("started", "–"))), ("finished", e(m.get("finished") or "not finished")),
             ("wall time", e(f"{wall:,.0f} s" if wall is not None else "–")),
             ("stage time (sum)", e(f"{run.stage_seconds():,.0f} s")),
             ("stages", e(", ".join(f"{n} {k}" for k, n in counts.items())))]
    dl = "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in items)
    return f"<h1>{e(run.name)}: recipe report</h1>\n<dl class=\"meta\">{dl}</dl>"


def stop_banner(run: Run) -> str:
    """A failed gate or stage, first thing on the page: what stopped the run and what did not run."""
    stop = run.stopped_by
    failed = [s for s in run.stages if s.status == "failed"]
    if not stop and not failed and run.status not in ("failed", "gate_failed"):
        return ""
    parts = []
    if stop:
        g = run.stopping_gate()
        parts.append(f"<h2>Run stopped by a gate on stage {e(stop.get('stage', g.get('stage') if g else '?'))}</h2>")
        if g:
            parts.append(f"<p><b>{e(g.get('metric'))}</b> rule <code>{e(g.get('rule'))}</code>: value "
                         f"<b>{e(num(g.get('value')))}</b>, reference {e(num(g.get('reference')))}"
                         f"{' (' + e(g.get('reference_stage')) + ')' if g.get('reference_stage') else ''}.</p>")
            if g.get("message"):
                parts.append(f"<p>{e(g['message'])}</p>")
        if stop.get("message") and (not g or stop["message"] != g.get("message")):
            parts.append(f"<p>{e(stop['message'])}</p>")
    else:
        parts.append(f"<h2>Run {e(run.status)}</h2>")
    if failed:
        parts.append("<p>Failed stage(s): " + ", ".join(f"<b>{e(s.name)}</b>" for s in failed) + "</p>")
    not_run = run.not_run()
    if not_run:
        parts.append("<p>Stages that did not run: " + ", ".join(f"{e(s.name)} ({e(s.status)})" for s in not_run)
                     + "</p>")
    return '<div class="banner" id="stopped">' + "\n".join(parts) + "</div>"


def _interval(g: dict) -> str:
    iv = g.get("interval")
    if not iv:
        return "-"
    conf = g.get("confidence")
    return f"[{iv[0]:+.3f}, {iv[1]:+.3f}]" + (f" ({conf * 100:g}%)" if conf else "")


def gates(run: Run) -> str:
    if not run.gates:
        return section("gates", "Gates", '<p class="absent">No gates configured in this recipe.</p>')
    rows, classes = [], []
    for i, g in enumerate(run.gates):
        stopped = run.stopped_by and run.stopped_by.get("gate") == run.gate_index(i)
        decision = g.get("decision") or ("pass" if g.get("passed") else "fail")
        if decision == "pass":
            verdict = badge("passed", "ok")
        elif decision == "inconclusive":
            verdict = badge("INCONCLUSIVE: stopped the run" if stopped else "inconclusive (warn)", "warn")
        else:
            verdict = badge("FAILED: stopped the run" if stopped else "FAILED", "bad")
        ref = num(g.get("reference")) + (f" ({g['reference_stage']})" if g.get("reference_stage") else "")
        n = g.get("n")
        rows.append([run.gate_index(i), g.get("stage", ""), g.get("metric", ""), g.get("rule", ""), num(g.get("value")), ref,
                     "-" if n is None else n, _interval(g), verdict, g.get("message", "")])
        classes.append("" if decision == "pass" else "fail")
    note = ("<p>Each gate is decided on a confidence interval: of the metric for <code>min</code>/<code>max</code>, "
            "of the change vs the reference for <code>max_drop</code>/<code>max_rise</code> (paired when both models "
            "saw the same items). Pass: the whole interval is inside the rule; fail: the whole interval is beyond it; "
            "inconclusive: too few items to tell.</p>")
    return section("gates", "Gates", note + table(["#", "stage", "metric", "rule", "value", "reference", "n",
                                                   "interval", "result", "reason"], rows, classes, numeric={4}))


def benchmarks(run: Run) -> str:
    cols, rows = benchmark_table(run)
    if not rows:
        return section("benchmarks", "Benchmarks", absent(run, "eval", "benchmark results"))
    details = {s.name: eval_details(s) for s, _ in rows}
    # n and scoring mode per metric, from the first evaluated model that has them
    info = {c: next((details[s.name][c] for s, _ in rows if c in details[s.name]), None) for c in cols}

    def cell(s, vals, c) -> str:
        v, d = vals.get(c), details[s.name].get(c)
        out = num(v, percent_metric(c))
        if v is not None and d is not None and d.stderr is not None:
            out += f" ± {num(d.stderr, percent_metric(c))}"
        return out

    prompts = {c: prompt_labels(details.values(), c) for c in cols}

    def about(c) -> str:
        return (f"n={info[c].n}, {info[c].scoring}, " if info[c] else "") + f"system prompt: {prompts[c]}"

    main = headline(run, cols)
    head = ["model (eval stage)"] + [Raw(f"{e(c)}<br><small>{e(about(c))}</small>") for c in main]
    parts = [table(head, [[f"{s.label} ({s.name})"] + [cell(s, vals, c) for c in main] for s, vals in rows],
                   numeric=set(range(1, len(main) + 1)))]
    pct = [c for c in main if percent_metric(c)]
    if pct:
        series = {s.label: [100 * vals[c] if c in vals else None for c in pct] for s, vals in rows}
        parts.append(img(plots.grouped_bars(pct, series, "%", "Benchmarks per evaluated model"), "benchmark chart"))
    parts.append("<p><small>Each benchmark's main metric (groups stand for their subtasks); percentages ± "
                 "standard error. Scoring modes: loglik (lm-eval option log-likelihood), letter (answer letter "
                 "after the chat template), generate (greedy answer, parsed). System prompt: the one each number "
                 "was measured with, as its results.json records it (loglik never uses one, as lm-eval).</small></p>")
    # every metric, one row each (models as columns: there are far more metrics than models)
    full = table(["metric", "n", "scoring", "system prompt"] + [s.label for s, _ in rows],
                 [[c, info[c].n if info[c] else "–", info[c].scoring if info[c] else "–", prompts[c]]
                  + [cell(s, vals, c) for s, vals in rows] for c in cols],
                 numeric=set(range(4, 4 + len(rows))) | {1})
    parts.append(f"<details><summary>All {len(cols)} metrics</summary>{full}</details>")
    return section("benchmarks", "Benchmarks", *parts)


def safety(run: Run) -> str:
    rows = safety_rows(run)
    parts = []
    if rows:
        cols: list[str] = []
        for _, m in rows:
            cols += [k for k in m if not k.startswith("safety.asr.") and k not in cols]
        parts.append("<h3>Safety and over-refusal per evaluated model</h3>")
        parts.append(table(["model (eval stage)", "system prompt"] + cols,
                           [[f"{s.label} ({s.name})", safety_prompt(s)] + [num(m.get(c), True) for c in cols]
                            for s, m in rows],
                           numeric=set(range(2, len(cols) + 2))))
        first, last = rows[0], rows[-1]
        a0, a1 = per_attack(first[1]), per_attack(last[1])
        attacks = list(dict.fromkeys([*a0, *a1]))
        if attacks:
            same = first[0] is last[0]
            title = (f"ASR per attack: {first[0].label}" if same else
                     f"ASR per attack before ({first[0].label}) and after ({last[0].label}) alignment")
            n = attack_counts(last[0]) or attack_counts(first[0])
            head = ["attack", "attempts"] + ([first[0].label] if same else [f"before: {first[0].label}",
                                                                           f"after: {last[0].label}", "change"])
            body = []
            for a in attacks:
                r = [a, num(n.get(a)), num(a0.get(a), True)]
                if not same:
                    d = None if a0.get(a) is None or a1.get(a) is None else a1[a] - a0[a]
                    r += [num(a1.get(a), True), "–" if d is None else f"{100 * d:+.1f} pts"]
                body.append(r)
            parts += [f"<h3>{e(title)}</h3>", table(head, body, numeric=set(range(1, len(head))))]
            series = {f"before: {first[0].label}": [100 * a0[a] if a in a0 else None for a in attacks]}
            if not same:
                series[f"after: {last[0].label}"] = [100 * a1[a] if a in a1 else None for a in attacks]
            parts.append(img(plots.grouped_bars(attacks, series, "attack success rate (%)", title, horizontal=True),
                             "ASR per attack"))
        if len(rows) == 1:
            parts.append('<p class="absent">Only one evaluated model has safety metrics: no before/after '
                         'comparison.</p>')
    else:
        parts.append(absent(run, EVALUATION, "safety evaluation") if not run.evaluations() else
                     '<p class="absent">No evaluated model has safety metrics (safety.*).</p>')
    for s in run.section("safety"):  # red-team stages
        sm = s.json("summary.json")
        pairs = sm.get("pairs", {}).get("n")
        parts.append(f"<p>Red-team stage <b>{e(s.name)}</b> (model {e(sm['model'])}): ASR "
                     f"{e(num(sm['attacks']['asr'], True))} over {e(sm['attacks']['n'])} attempts, primary judge "
                     f"{e(sm['primary_judge'])}, system prompt {e(sm.get('system_prompt') or NOT_RECORDED)}"
                     + (f"; {e(pairs)} safety DPO pairs written" if pairs is not None else "") + ".</p>")
    return section("safety", "Safety", *parts)


def data(run: Run) -> str:
    st = run.one("data")
    if st is None:
        return section("data", "Data", absent(run, "data", "data card"))
    card = st.json("card.json")
    f = card["funnel"]
    sources = list(f["loaded"])
    steps = [k for k in FUNNEL if k in f]
    body = [[s] + [num(f[k].get(s, 0)) for k in steps] for s in sources]
    body.append(["total"] + [num(sum(f[k].values())) for k in steps])
    parts = ["<h3>Funnel (rows per source after each step)</h3>",
             table(["source"] + steps, body, numeric=set(range(1, len(steps) + 1)))]
    if f.get("bad_rows_skipped"):
        parts.append("<p>Bad rows skipped: " + e(", ".join(f"{k} {v}" for k, v in f["bad_rows_skipped"].items()))
                     + "</p>")
    parts.append(img(plots.stacked_funnel(steps, {s: [f[k].get(s, 0) for k in steps] for s in sources}),
                     "data funnel"))
    c = card["decontamination"]
    parts.append(f"<h3>Contamination ({e(c['n'])}-gram overlap with benchmark test splits)</h3>")
    if not c.get("enabled", True):
        parts.append('<p class="absent">Decontamination was disabled in the data config.</p>')
    rows, classes = [], []
    for b, status in c["benchmarks"].items():
        per = c["removed_by_benchmark"].get(b, {})
        rows.append([b, status, num(sum(per.values())), ", ".join(f"{s}: {n}" for s, n in per.items()) or "–"])
        classes.append("fail" if str(status).startswith("NOT CHECKED") else "")
    if rows:
        parts.append(table(["benchmark", "status", "rows removed", "by source"], rows, classes, numeric={2}))
    cot = card.get("cot")
    if cot:
        parts.append(f"<p>Synthetic CoT: teacher {e(cot['teacher'])}, kept {e(cot['accepted'])} of "
                     f"{e(cot['pool'])} (acceptance {e(cot['acceptance_rate'])}); tokens {e(cot['tokens']['prompt'])} "
                     f"prompt + {e(cot['tokens']['completion'])} generated.</p>")
    parts.append(f"<p>Output rows: SFT {e(card['outputs']['sft_train'])} train + "
                 f"{e(card['outputs']['sft_validation'])} validation; preference "
                 f"{e(card['outputs']['preference_train'])} + {e(card['outputs']['preference_validation'])}.</p>")
    return section("data", "Data", *parts)


def medprompt(run: Run) -> str:
    st = run.one("medprompt")
    if st is None:
        return section("medprompt", "Medprompt", absent(run, "medprompt", "Medprompt results"))
    res = st.json(MEDPROMPT_RESULTS)
    summ = res["strategies"]
    body = [[k, num(s.get("n")), num(s.get("accuracy"), True), num(s.get("generated_tokens_per_question")),
             num(s.get("prompt_tokens_per_question")), num(s.get("members_per_question")),
             num(s.get("seconds_per_question"))] for k, s in summ.items()]
    parts = [f"<p>Task {e(res['task'])}, model {e(res['model'])}, system prompt "
             f"{e(res.get('system_prompt') or NOT_RECORDED)}.</p>",
             table(["strategy", "n", "accuracy", "generated tok/q", "prompt tok/q", "ensemble members/q", "s/q"],
                   body, numeric={1, 2, 3, 4, 5, 6})]
    if any(s.get("n") for s in summ.values()):
        parts.append(img(plots.medprompt(summ, f"{res['task']}, {res['model']}"), "Medprompt accuracy vs tokens"))
    return section("medprompt", "Medprompt: accuracy vs tokens per question", *parts)


def training(run: Run) -> str:
    parts = []
    supervised, preference = training_runs(run)
    for s, m in supervised:
        parts.append(f"<h3>SFT: {e(s.name)}</h3>")
        parts.append(table(["train rows", "steps", "train loss", "eval loss before", "eval loss after", "tokens",
                            "tokens/s", "train s"],
                           [[num(m.get("train_rows")), num(m.get("steps")), num(m.get("train_loss")),
                             num(m.get("eval_loss_before")), num(m.get("eval_loss_after")),
                             num(m.get("tokens_seen")), num(m.get("tokens_per_s")), num(m.get("train_seconds"))]],
                           numeric=set(range(8))))
    for s, stages in preference:
        parts.append(f"<h3>DPO: {e(s.name)}</h3>")
        body = []
        for d in stages:
            b, a = d.get("before", {}), d.get("after", {})
            body.append([d.get("stage", ""), num(d.get("pairs")), num(d.get("steps")), num(d.get("train_loss")),
                         num(b.get("rewards/accuracies")), num(a.get("rewards/accuracies")),
                         num(b.get("rewards/margins")), num(a.get("rewards/margins"))])
        parts.append(table(["stage", "pairs", "steps", "train loss", "reward acc before", "reward acc after",
                            "margin before", "margin after"], body, numeric=set(range(1, 8))))
    if not parts:
        parts.append(absent(run, "training", "SFT or DPO metrics"))
    return section("training", "Training", *parts)


def merge(run: Run) -> str:
    st = run.one("merge")
    if st is None:
        return section("merge", "Merge", absent(run, "merge", "merge"))
    mk = st.file("merge.yaml").read_text(encoding="utf-8")
    checks = st.json("checks.json")
    flags = [k for k in ("same_vocab", "same_chat_template", "finite_weights", "generates") if k in checks]
    return section("merge", "Merge",
                   f"<p>Method <b>{e(yaml.safe_load(mk).get('merge_method'))}</b>; checks: "
                   + ", ".join(f"{e(k)} {badge('ok', 'ok') if checks[k] else badge('FAILED', 'bad')}" for k in flags)
                   + "</p>", f"<pre>{e(mk)}</pre>")


def compute(run: Run) -> str:
    rows, names, secs, classes = [], [], [], []
    for s in run.stages:
        n, what = tokens(s)
        rows.append([s.name, s.kind, status_badge(s.status), num(s.seconds), num(n), what])
        classes.append("fail" if s.status == "failed" else "")
        if s.ran and s.seconds:
            names.append(s.name)
            secs.append(float(s.seconds))
    rows.append(["total", "", "", num(run.stage_seconds()), "", "stages that ran"])
    parts = [table(["stage", "kind", "status", "seconds", "tokens", "tokens count"], rows, classes + [""],
                   numeric={3, 4})]
    if secs:
        parts.append(img(plots.seconds_per_stage(names, secs), "seconds per stage"))
    return section("compute", "Compute per stage", *parts)


def recipe(run: Run) -> str:
    if run.recipe_text is None:
        return ""
    return section("recipe", "Recipe", f"<details><summary>recipe.yaml (resolved)</summary><pre>"
                                       f"{e(run.recipe_text)}</pre></details>")


def render(run: Run) -> str:
    toc = " · ".join(f'<a href="#{a}">{t}</a>' for a, t in [
        ("gates", "gates"), ("benchmarks", "benchmarks"), ("safety", "safety"), ("data", "data"),
        ("medprompt", "Medprompt"), ("training", "training"), ("merge", "merge"), ("compute", "compute")])
    parts = [header(run), stop_banner(run), f"<p>{toc}</p>", gates(run), benchmarks(run), safety(run), data(run),
             medprompt(run), training(run), merge(run), compute(run), recipe(run)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            f"<title>{e(run.name)}: aloekit report</title>\n<style>{CSS}</style></head>\n<body><main>\n"
            + "\n".join(p for p in parts if p) + "\n</main></body></html>\n")


def write_report(run_dir: str | Path) -> Path:
    """Write <run_dir>/report.html and return its path."""
    run = load(run_dir)
    return atomic_write_text(run.path / "report.html", render(run))

