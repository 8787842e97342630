"""``seerflex`` command line: one sub-command per recipe, each implemented in its own module."""

from __future__ import annotations

import importlib
import sys

# command -> "module:function"; the function takes the remaining argv and returns an exit code.
COMMANDS: dict[str, str] = {
    "bench": "seerflex.recipes.bench:main",
    "convert": "seerflex.hf.original:convert_main",
    "distill": "seerflex.distill.recipe:main",
    "eval": "seerflex.recipes.eval:main",
    "demo": "seerflex.recipes.demo:main",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        names = ", ".join(sorted(COMMANDS)) or "(none yet)"
        print(f"usage: seerflex COMMAND [args]\ncommands: {names}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module, func = COMMANDS[argv[0]].split(":")
    return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
