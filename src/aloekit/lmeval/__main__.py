"""`python -m aloekit.lmeval <lm_eval arguments>`: lm-eval's own CLI with `aloekit-hf` registered.

The plain `lm_eval` command cannot see the model (lm-eval 0.4 loads no plugins), so this is the command-line way:
`python -m aloekit.lmeval --model aloekit-hf --model_args pretrained=PATH,dtype=float32,batch_size=8 --tasks arc_easy`.
"""

from __future__ import annotations


def main() -> None:
    import sys

    from ..errors import UserError
    from . import register
    try:
        register()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    from lm_eval.__main__ import cli_evaluate
    cli_evaluate()


if __name__ == "__main__":  # pkgutil.walk_packages imports this module too: it must do nothing then
    main()
