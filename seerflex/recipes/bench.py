"""``seerflex bench {kernel,ttft}``: dispatch to the benchmark recipes."""

from __future__ import annotations

import importlib

from seerflex.console import console

BENCHMARKS = {"kernel": "seerflex.recipes.bench_kernel", "ttft": "seerflex.recipes.bench_ttft"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        console.print(f"usage: seerflex bench {{{','.join(BENCHMARKS)}}} [key=value ...]; "
                      "seerflex bench kernel --help lists its keys", markup=False, highlight=False)
        return 0
    if argv[0] not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {argv[0]!r}; choose one of {sorted(BENCHMARKS)}")
    return importlib.import_module(BENCHMARKS[argv[0]]).main(argv[1:])
