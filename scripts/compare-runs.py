"""Compare the result fields of every run of two pipeline results folders: the
check that a refactor changed no result (issue 17's "behaviour unchanged").

    python scripts/compare-runs.py OLD_RESULTS NEW_RESULTS   # e.g. two results/smoke

Every ``metrics.json`` under each folder is compared with its namesake, leaving out
what a rerun changes by itself: timings, versions, the commit, the host, the
settings echo, the checkpoint path, time-to-target's seconds and the milliseconds
of the bfloat16 probe that ``precision_reason`` quotes. Prints the runs
that differ and their fields; exit status 1 if any does or the two sets of runs
differ, 0 otherwise.
"""

import json
import re
import sys
from pathlib import Path

LEFT_OUT = {
    "wall_seconds", "train_seconds", "device_hours", "peak_memory_mb", "versions",
    "git_commit", "host", "device_name", "settings", "pretrained_path",
}


def results(root: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(root.glob("**/metrics.json")):
        metrics = json.loads(path.read_text())
        (metrics.get("time_to_target") or {}).pop("seconds", None)
        if "precision_reason" in metrics:
            metrics["precision_reason"] = re.sub(r"\([\d.]+ ms against [\d.]+ ms\)", "(ms)", metrics["precision_reason"])
        out[str(path.relative_to(root))] = {k: v for k, v in metrics.items() if k not in LEFT_OUT}
    return out


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    old, new = (results(Path(a)) for a in sys.argv[1:])
    same_runs = set(old) == set(new)
    print(f"{len(old)} runs before, {len(new)} after; the same runs: {same_runs}")
    differ = 0
    for run in sorted(set(old) & set(new)):
        a, b = old[run], new[run]
        fields = sorted(f for f in set(a) | set(b) if json.dumps(a.get(f), sort_keys=True) != json.dumps(b.get(f), sort_keys=True))
        if fields:
            differ += 1
            print(f"differs: {run}: {', '.join(fields)}")
    print(f"identical result fields: {len(set(old) & set(new)) - differ} of {len(set(old) & set(new))}")
    return 0 if same_runs and not differ else 1


if __name__ == "__main__":
    sys.exit(main())
