"""``seerflex bench {kernel,ttft}``: dispatch to the benchmark recipes."""

from __future__ import annotations

import importlib

BENCHMARKS = {"kernel": "seerflex.recipes.bench_kernel", "ttft": "seerflex.recipes.bench_ttft"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: seerflex bench {{{','.join(BENCHMARKS)}}} [options]")
        return 2
    return importlib.import_module(BENCHMARKS[argv[0]]).main(argv[1:])
