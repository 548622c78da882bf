#!/usr/bin/env bash
# Render both example films in one batch — scripted use of `cinema`.
#
#   examples/render-all.sh [DIR]     # DIR defaults to ./films
#
# Creates DIR/heist and DIR/lighthouse from the bundled examples (skipping any that
# already exist), renders both with one `cinema render` call, and reports which failed
# from its --json output (one JSON object per line). Exits with render's exit code:
# 0 ok, 1 a render failed, 2 bad input.
set -euo pipefail

dir="${1:-./films}"
mkdir -p "$dir"

for name in heist lighthouse; do
    if [[ -e "$dir/$name" ]]; then
        echo "keeping existing project $dir/$name"
    else
        cinema new "$dir/$name" --example "$name"
    fi
done

# Capture the JSON lines and the exit code without `set -e` stopping the script.
rc=0
out="$(cinema render -p "$dir/heist" -p "$dir/lighthouse" --json)" || rc=$?

# Parse the JSON lines without jq: a line reports a failure when it says ok: false,
# has an error, or a status of failed/error.
printf '%s\n' "$out" | "${PYTHON:-python3}" -c '
import json, sys
failed = []
for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    try:
        event = json.loads(line)
    except ValueError:
        continue
    bad = (event.get("ok") is False or event.get("error")
           or str(event.get("status", "")).lower() in ("failed", "error"))
    if bad:
        where = event.get("project") or event.get("shot") or "?"
        why = event.get("error") or event.get("message") or event.get("status")
        failed.append(f"{where}: {why}")
if failed:
    print("FAILED:")
    print("\n".join("  " + f for f in failed))
elif sys.argv[1] != "0":
    print(f"cinema render failed (exit {sys.argv[1]}) before reporting a project")
else:
    print("all renders succeeded")
' "$rc" || echo "could not read the JSON output of cinema render" >&2

echo "cinema render exit code: $rc"
exit "$rc"
