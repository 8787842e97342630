"""``seerflex`` command line: the one dispatcher; every command is a recipe in ``seerflex.recipes``.

Bad input ends with one line naming the problem and exit code 2; ``--debug`` (or
``SEERFLEX_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

# command -> recipe module; its ``main`` takes the remaining argv and returns an exit code.
COMMANDS: dict[str, str] = {
    "bench": "seerflex.recipes.bench",
    "convert": "seerflex.recipes.convert",
    "corpus": "seerflex.recipes.corpus",
    "demo": "seerflex.recipes.demo",
    "distill": "seerflex.recipes.distill",
    "eval": "seerflex.recipes.eval",
    "finetune": "seerflex.recipes.finetune",
}
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, KeyError, OSError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SEERFLEX_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: seerflex COMMAND [CONFIG.yaml] [key=value ...] [--debug]\ncommands: {', '.join(sorted(COMMANDS))}"
              "\n'seerflex COMMAND --help' lists a command's keys")
        return 0
    if argv[0] not in COMMANDS:
        print(f"seerflex: unknown command {argv[0]!r}; commands: {', '.join(sorted(COMMANDS))}", file=sys.stderr)
        return 2
    try:
        return int(importlib.import_module(COMMANDS[argv[0]]).main(argv[1:]) or 0)
    except USER_ERRORS as err:
        if debug:
            raise
        message = str(err).strip() or type(err).__name__
        print(f"seerflex {argv[0]}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
