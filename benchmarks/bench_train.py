"""Training and registration cost as data grows: ``make bench-train``.

Each size runs in a fresh process (so peak memory is that size's own) on synthetic
classification data (numeric and categorical columns) written as Parquet, through the real
trainer: load, validate, fit, evaluate, gate, profile, serialize and register into a temporary
local registry. Prints a table and writes ``bench-results/train.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STEPS = [
    "load",
    "validate",
    "fit",
    "evaluate",
    "gate",
    "serialize",
    "profile",
    "onnx",
    "register",
    "total",
]


def synthetic(rows: int, seed: int = 0) -> pd.DataFrame:
    """20 numeric features, 2 categorical ones, and a binary target that depends on both."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, 20)).astype("float64")
    weights = rng.normal(size=20)
    region = rng.choice(["north", "south", "east", "west"], size=rows)
    plan = rng.choice([f"plan-{i}" for i in range(12)], size=rows)
    logit = numeric @ weights / 4 + np.where(region == "north", 0.8, 0.0)
    frame = pd.DataFrame(numeric, columns=[f"f{i:02d}" for i in range(20)])
    frame["region"] = region
    frame["plan"] = plan
    frame["label"] = np.where(logit + rng.logistic(size=rows) > 0, "churn", "stay")
    return frame


def one(rows: int, estimator: str) -> dict[str, Any]:
    """Run the trainer once on ``rows`` rows; returns timings and peak memory."""
    from serving_common.logging import configure_logging
    from trainer.settings import TrainerSettings
    from trainer.train import run

    configure_logging("WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.parquet"
        started = time.perf_counter()
        synthetic(rows).to_parquet(data)
        generate = time.perf_counter() - started
        settings = TrainerSettings(
            data_uri=str(data),
            target="label",
            model_name="bench",
            registry_uri=str(Path(tmp) / "registry"),
            estimator=estimator,
        )
        result = run(settings)
        artifact = result.metadata.artifact.size_bytes if result.metadata else 0
        onnx = result.metadata.onnx if result.metadata else None
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "rows": rows,
        "estimator": estimator,
        "outcome": result.outcome,
        "timings_seconds": result.timings,
        "generate_seconds": round(generate, 3),
        "peak_rss_mib": round(peak_mib, 1),
        "artifact_bytes": artifact,
        "onnx": onnx.model_dump(mode="json") if onnx is not None else None,
        "metrics": result.metrics,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--estimator", default="logistic", help="trainer estimator (default: %(default)s)"
    )
    parser.add_argument("--output", type=Path, default=Path("bench-results/train.json"))
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed per size")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.estimator)))
        return 0

    results = []
    for rows in args.rows:
        print(f">> {rows:>9,} rows ({args.estimator}) ...", flush=True)
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_train",
                "--one",
                str(rows),
                "--estimator",
                args.estimator,
            ],
            capture_output=True,
            text=True,
            timeout=args.timeout,
            check=False,
        )
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            return 1
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))

    header = (
        f"{'rows':>10} "
        + " ".join(f"{s:>9}" for s in STEPS)
        + f" {'peak MiB':>9} {'µs/row':>7} {'model KiB':>9}"
    )
    print("\nseconds per step (trainer, one process per size)")
    print(header)
    for r in results:
        t = r["timings_seconds"]
        per_row = t["total"] / r["rows"] * 1e6
        print(
            f"{r['rows']:>10,} "
            + " ".join(f"{t.get(s, 0.0):>9.3f}" for s in STEPS)
            + f" {r['peak_rss_mib']:>9.1f} {per_row:>7.1f} {r['artifact_bytes'] / 1024:>9.1f}"
        )
    if len(results) > 1:
        first, last = results[0], results[-1]
        rows_ratio = last["rows"] / first["rows"]
        time_ratio = last["timings_seconds"]["total"] / first["timings_seconds"]["total"]
        print(
            f"\n{rows_ratio:.0f}x the rows took {time_ratio:.1f}x the time "
            f"(linear would be {rows_ratio:.0f}x); registration alone: "
            f"{first['timings_seconds']['register']:.3f}s -> "
            f"{last['timings_seconds']['register']:.3f}s"
        )
    print("\nONNX export (convert, then check against the pipeline) at each size:")
    for r in results:
        t = r["timings_seconds"]
        onnx = r.get("onnx") or {}
        outcome = (
            f"checked on {onnx['check']['rows']} rows" if onnx.get("check") else onnx.get("reason")
        )
        print(
            f"  {r['rows']:>10,} rows: {t.get('onnx', 0.0):.3f} s "
            f"({t.get('onnx', 0.0) / t['total']:.1%} of the run), {outcome}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
