"""`python -m imagegen_operator` (or `imagegen-operator`): run the operator (Kopf inside).

    imagegen-operator                         acquire the leader-election Lease, then act
    imagegen-operator --no-leader-election    act at once, no Lease: run ONE replica only (dev)

Settings come from the environment; see config.py and docs/operations.md.
"""

from __future__ import annotations

import logging
import os
import sys

from .config import ENV_STANDALONE, OperatorConfig


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    unknown = [a for a in args if a != "--no-leader-election"]
    if unknown:
        print(f"imagegen-operator: unknown argument {unknown[0]!r} (see --help)",
              file=sys.stderr)
        return 2
    env = dict(os.environ)
    if "--no-leader-election" in args:
        env[ENV_STANDALONE] = "1"
    try:
        config = OperatorConfig.from_env(env)
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
    from .startup import run  # kopf is imported only when running

    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
