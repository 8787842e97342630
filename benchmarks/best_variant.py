"""Print the gate design whose gates rose least over dense (mean log ratio over the held-out domains) in
``gpu_qwen.sh variants``' folder: EVAL/variant_<name>/ppl_<domain>/ppl.json next to EVAL/oracle_max_<domain>'s dense row.

    python benchmarks/best_variant.py /tmp/run/qwen/eval      # -> e.g. h128 (a table of all on stderr)
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def ppl(path: Path, scorer: str) -> float:
    return next(r["ppl"] for r in json.loads(path.read_text())["rows"] if r["scorer"] == scorer)


def rises(folder: Path) -> dict[str, float]:
    """Design -> mean log(ppl / dense ppl) over the domains every design was read on (a cut run's design with
    fewer domains narrows the comparison for all, so no design is ranked on easier text than another)."""
    read = {d.name.removeprefix("variant_"): {f.parent.name[4:]: f for f in d.glob("ppl_*/ppl.json")}
            for d in sorted(folder.glob("variant_*"))}
    read = {name: files for name, files in read.items() if files}
    domains = set.intersection(*(set(files) for files in read.values())) if read else set()
    return {name: sum(math.log(ppl(files[d], "gate") / ppl(folder / f"oracle_max_{d}" / "ppl.json", "dense"))
                      for d in domains) / len(domains) for name, files in read.items()} if domains else {}


if __name__ == "__main__":
    found = rises(Path(sys.argv[1]))
    if not found:
        sys.exit(f"no variant results under {sys.argv[1]}")
    for name, rise in sorted(found.items(), key=lambda kv: kv[1]):
        print(f"{name:>20} {100 * (math.exp(rise) - 1):+.2f}%", file=sys.stderr)
    print(min(found, key=found.get))
