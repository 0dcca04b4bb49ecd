#!/usr/bin/env bash
# `make test` as a new user runs it: a fresh clone, every project cache moved aside, nothing
# built before. See docs/testing.md ("The fresh-machine check").
#
#   scripts/fresh-check.sh                 fresh clone of HEAD, ~/.cache/sovereign-llm moved aside
#   scripts/fresh-check.sh --keep-cache    fresh clone, the cache the previous check built kept
#   scripts/fresh-check.sh --busy          ... while two CPU hogs keep both cores busy
#   scripts/fresh-check.sh --ref COMMIT    another commit than HEAD
#
# The result (start, wall time, the pytest summary line, exit code) is appended to
# $SOVEREIGN_FRESH_LOG (default ~/sovereign-fresh-checks.log) and printed.
# The moved-aside cache stays where it was moved (the path is printed); nothing is deleted.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
ref=HEAD keep=0 busy=0
while (($#)); do
  case $1 in
    --keep-cache) keep=1 ;;
    --busy) busy=1 ;;
    --ref) ref=${2:?--ref needs a commit}; shift ;;
    *) echo "fresh-check: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
cache=${XDG_CACHE_HOME:-$HOME/.cache}/sovereign-llm
log=${SOVEREIGN_FRESH_LOG:-$HOME/sovereign-fresh-checks.log}
work=$(mktemp -d /tmp/sovereign-fresh.XXXXXX)

if ((!keep)) && [ -e "$cache" ]; then
  aside="$cache.aside-$(date +%Y%m%dT%H%M%S)"
  mv "$cache" "$aside"
  echo "fresh-check: moved $cache aside to $aside"
fi
for var in SOVEREIGN_WHEEL_CACHE SOVEREIGN_HOSTS_CACHE; do
  [ -z "${!var:-}" ] || { echo "fresh-check: $var is set; unset it, a new user has no such setting" >&2; exit 2; }
done

git clone -q "$repo" "$work/sovereign-llm"
git -C "$work/sovereign-llm" checkout -q "$ref"
commit=$(git -C "$work/sovereign-llm" rev-parse --short HEAD)

hogs=()
stop_hogs() { ((${#hogs[@]})) && kill "${hogs[@]}" 2>/dev/null || true; }
trap stop_hogs EXIT
if ((busy)); then
  for _ in $(seq "$(nproc)"); do yes >/dev/null & hogs+=($!); done
  echo "fresh-check: ${#hogs[@]} CPU hogs running (pids ${hogs[*]})"
fi

start=$(date +%s)
set +e
(cd "$work/sovereign-llm" && make test) 2>&1 | tee "$work/make-test.log"
rc=${PIPESTATUS[0]}
set -e
wall=$(($(date +%s) - start))
stop_hogs
summary=$(grep -E '^[0-9]+ (passed|failed)|(passed|failed).* in [0-9.]+s' "$work/make-test.log" | tail -1 || true)
line="$(date -u +%FT%TZ) commit $commit cache $( ((keep)) && echo kept || echo 'moved aside') busy $busy: make test rc $rc, wall ${wall}s, ${summary:-no pytest summary}"
echo "$line" | tee -a "$log"
echo "fresh-check: clone and full log in $work"
exit "$rc"
