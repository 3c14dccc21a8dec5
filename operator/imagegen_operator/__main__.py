"""`python -m imagegen_operator` (or `imagegen-operator`): run the operator (wraps `kopf run`).

Settings come from the environment; see config.py and the README's configuration section.
"""

from __future__ import annotations

import logging
import sys

from .config import OperatorConfig


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        config = OperatorConfig.from_env()
    except ValueError as err:
        print(f"imagegen-operator: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, config.log_level, logging.INFO),
        format='{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s",'
               '"msg":"%(message)s"}',
    )
    # Kopf logs every timer run at INFO; our handlers log what they decide themselves.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from .operator_main import run  # kopf is imported only when running

    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
