#!/usr/bin/env bash
# `npm test`: the type check runs beside the first files of the parallel group (it is one
# CPU-bound process for about a minute; waiting for it first made the suite a minute longer), then
# the parallel group finishes, then the serial group runs alone. Any failure fails the run; the
# serial group does not start after a failure.
set -uo pipefail
cd "$(dirname "$0")/.."

typecheck_log="$(mktemp)"
trap 'rm -f "$typecheck_log"' EXIT
npm run --silent typecheck >"$typecheck_log" 2>&1 &
typecheck_pid=$!

GYRE_TEST_GROUP=parallel npm run --silent jest -- --maxWorkers=2 "$@"
parallel=$?

wait "$typecheck_pid"
typecheck=$?
if [ "$typecheck" -ne 0 ]; then
  echo "type check failed (npm run typecheck):"
  cat "$typecheck_log"
  exit "$typecheck"
fi
echo "type check passed"
[ "$parallel" -eq 0 ] || exit "$parallel"

GYRE_TEST_GROUP=serial npm run --silent jest -- --runInBand "$@"
