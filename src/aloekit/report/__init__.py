"""The recipe's last stage: report.html and model_card/README.md from a recipe run directory (and, on request,
the final model pushed to the hub, private by default).

    write_report(run_dir)                      -> <run>/report.html (self-contained: inline CSS, base64 plots)
    write_model_card(run_dir, out_dir=None)    -> <out_dir or run>/model_card/README.md (HF front matter)
    push_to_hub(model_dir, card, repo_id)      -> private hub repo with the model and the card as README.md
    run(run_dir, ...)                          -> all of the above, as the recipe runner calls it
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .card import push_to_hub, write_model_card
from .html import write_report
from .rundata import load


def run(run_dir: str | Path, push_repo: str | None = None, private: bool = True, license: str | None = None,
        language: list[str] | None = None, tags: list[str] | None = None, token: str | None = None) -> dict:
    """Write the report and the model card; push the final model when `push_repo` is given.

    The report is written whatever the run's status (a gate-stopped run needs it most); the push is refused
    unless every gate passed and the run has a final model."""
    report = write_report(run_dir)
    card = write_model_card(run_dir, license=license, language=language, tags=tags, repo_id=push_repo)
    out = {"report": str(report), "model_card": str(card), "pushed": None}
    if push_repo:
        r = load(run_dir)
        if not r.releasable():
            raise UserError(f"--push-to-hub: the run ended {r.status}"
                            + (f" (stopped by a gate on {r.stopped_by.get('stage')})" if r.stopped_by else "")
                            + f"; see {report}. Nothing was pushed")
        final = r.manifest.get("final_model")
        if not final:
            raise UserError("--push-to-hub: the run has no final model (manifest final_model is empty)")
        out["pushed"] = push_to_hub(r.path / final, card, push_repo, private=private, token=token)
    return out


__all__ = ["run", "write_report", "write_model_card", "push_to_hub"]
