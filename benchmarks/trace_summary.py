"""Summarise a fine-tune profile's Chrome trace (``profile_finetune.py`` writes ``<out>.trace.json``): per profiled
step the GPU timeline's span and busy time, split at the first backward attention kernel into forward and backward,
and the kernel time inside each ``seerflex.*`` range. Busy far below span means the GPU waited for the host.

    python benchmarks/trace_summary.py profile.trace.json.gz --out summary.json
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("trace")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    opener = gzip.open if args.trace.endswith(".gz") else open
    with opener(args.trace, "rt") as f:
        events = json.load(f)["traceEvents"]
    kernels = sorted((e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")), key=lambda e: e["ts"])
    annotations = [e for e in events if e.get("cat") == "gpu_user_annotation"]
    steps = []
    for step in (a for a in annotations if a["name"].startswith("ProfilerStep")):
        end = step["ts"] + step["dur"]
        inside = [k for k in kernels if step["ts"] <= k["ts"] < end]
        backward = [k["ts"] for k in inside if "flex_attention_backward" in k["name"] or "bwd" in k["name"].lower()]
        split = min(backward) if backward else end
        ranges: dict[str, float] = collections.defaultdict(float)
        for a in annotations:
            if a["name"].startswith("seerflex.") and step["ts"] <= a["ts"] < end:
                ranges[a["name"]] += sum(k["dur"] for k in inside if a["ts"] <= k["ts"] and k["ts"] + k["dur"] <= a["ts"] + a["dur"])
        steps.append({
            "step": step["name"], "span_ms": step["dur"] / 1e3, "busy_ms": sum(k["dur"] for k in inside) / 1e3,
            "forward_span_ms": (split - step["ts"]) / 1e3,
            "forward_busy_ms": sum(k["dur"] for k in inside if k["ts"] < split) / 1e3,
            "range_kernel_ms": {name: ms / 1e3 for name, ms in sorted(ranges.items())},
            "range_calls": dict(collections.Counter(a["name"] for a in annotations
                                                    if a["name"].startswith("seerflex.") and step["ts"] <= a["ts"] < end)),
        })
    with open(args.out, "w") as f:
        json.dump({"trace": args.trace, "steps": steps}, f, indent=1)
    for s in steps:
        print(s)


if __name__ == "__main__":
    main()
