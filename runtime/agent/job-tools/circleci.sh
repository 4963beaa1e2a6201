#!/bin/sh
# Gyre's in-job CLI: `circleci` and `circleci-agent` inside every job, as CircleCI injects its own.
# POSIX sh (busybox ash and dash), with only find, sort, awk, sed, tr and wc: it runs in images
# with no Node.js and no glibc. The agent puts it in $GYRE_JOB_DIR/bin, first on PATH.
#
#   circleci tests glob <pattern>...            files matching any pattern (*, **, ?, [abc], {a,b})
#   circleci tests split [flags] [file...]      this node's share of the names on stdin or in files
#   circleci tests run --command=CMD [flags]    pipes this node's share to `sh -c CMD`
#   circleci-agent step halt                    ends the job successfully after this step
#
# split/run flags: --split-by=name|filesize|timings, --timings-type=filename|classname|testname|
# autodetect (also file, name), --time-default=10s, --index=N, --total=N (default
# CIRCLE_NODE_INDEX / CIRCLE_NODE_TOTAL), --show-counts; run also --verbose.
# Timings are the test results of this job's last successful run, written by the agent to
# $GYRE_JOB_DIR/timings as lines of file<TAB>classname<TAB>name<TAB>seconds.

PROG=${0##*/}
case $PROG in circleci-agent) ;; *) PROG=circleci ;; esac
if [ -z "${GYRE_JOB_DIR:-}" ]; then
  GYRE_JOB_DIR=$(cd "$(dirname "$0")/.." 2>/dev/null && pwd)
fi
TAB=$(printf '\t')
NL='
'

fail() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit 1
}

usage() {
  cat >&2 <<EOF
Usage:
  $PROG tests glob <pattern>...
  $PROG tests split [--split-by=name|filesize|timings] [--timings-type=filename|classname|testname|autodetect]
                    [--time-default=DURATION] [--index=N] [--total=N] [--show-counts] [file...]
  $PROG tests run --command=COMMAND [the split flags] [--verbose] [file...]
  $PROG step halt
EOF
  exit "${1:-1}"
}

# ---- glob ----

# Prints every expansion of the first innermost {a,b,...} group of $1, recursively.
expand_braces() {
  case $1 in
    *\{*\}*) ;;
    *) printf '%s\n' "$1"; return ;;
  esac
  local head body pre post alt rest
  head=${1%%\}*}
  case $head in
    *\{*) ;;
    *) printf '%s\n' "$1"; return ;;
  esac
  body=${head##*\{}
  pre=${head%\{*}
  post=${1#*\}}
  rest=$body,
  while [ -n "$rest" ]; do
    alt=${rest%%,*}
    rest=${rest#*,}
    expand_braces "$pre$alt$post"
  done
}

# The extended regular expression a glob pattern (braces expanded) matches whole paths with.
glob_regex() {
  local s1 s2
  s1=$(printf '\001')
  s2=$(printf '\002')
  printf '%s\n' "$1" | sed \
    -e 's/[\\.+()|^${}]/\\&/g' \
    -e "s#\*\*/#$s1#g" -e "s#\*\*#$s2#g" \
    -e 's#\*#[^/]*#g' -e 's#?#[^/]#g' -e 's#\[!#[^#g' \
    -e "s#$s1#(.*/)?#g" -e "s#$s2#.*#g" \
    -e 's#^#^#' -e 's#$#$#'
}

# The leading directories of a pattern that hold no glob character: where `find` starts.
glob_base() {
  local p base part
  p=$1
  base=
  case $p in /*) base=/ ; p=${p#/} ;; esac
  while :; do
    case $p in */*) ;; *) break ;; esac
    part=${p%%/*}
    case $part in *[*?[]*) break ;; esac
    base=$base$part/
    p=${p#*/}
  done
  [ -n "$base" ] || base=./
  printf '%s\n' "$base"
}

tests_glob() {
  [ $# -gt 0 ] || fail "tests glob needs at least one pattern, e.g. circleci tests glob \"test/**/*.js\""
  local pattern expanded base regex
  for pattern in "$@"; do
    expand_braces "$pattern" | while IFS= read -r expanded; do
      expanded=${expanded#./}
      base=$(glob_base "$expanded")
      [ -e "$base" ] || continue
      regex=$(glob_regex "$expanded")
      case $base in
        ./) find . \( -type f -o -type l \) 2>/dev/null | sed 's#^\./##' ;;
        /) find / \( -type f -o -type l \) 2>/dev/null ;;
        *) find "${base%/}" \( -type f -o -type l \) 2>/dev/null ;;
      esac | grep -E -- "$regex"
    done
  done | LC_ALL=C sort -u
  return 0
}

# ---- split ----

SPLIT_BY=name
TIMINGS_TYPE=autodetect
TIME_DEFAULT=
INDEX=${CIRCLE_NODE_INDEX:-0}
TOTAL=${CIRCLE_NODE_TOTAL:-1}
SHOW_COUNTS=
VERBOSE=
COMMAND=
HAVE_COMMAND=
FILES=

# Seconds in a duration such as 10s, 1.5m, 250ms, 1h or a bare number of seconds.
seconds_of() {
  printf '%s\n' "$1" | awk '
    /^[0-9]+(\.[0-9]+)?(ms|s|m|h)?$/ {
      n = $0; unit = $0; sub(/[a-z]+$/, "", n); sub(/^[0-9.]+/, "", unit)
      f = 1; if (unit == "ms") f = 0.001; else if (unit == "m") f = 60; else if (unit == "h") f = 3600
      printf "%.6f\n", n * f; ok = 1 }
    END { if (!ok) exit 1 }'
}

parse_split_flags() {
  local flag value
  while [ $# -gt 0 ]; do
    flag=$1
    shift
    case $flag in
      --) FILES="$FILES$NL$(printf '%s\n' "$@")"; break ;;
      --show-counts) SHOW_COUNTS=1; continue ;;
      -v|--verbose) VERBOSE=1; continue ;;
      -h|--help) usage 0 ;;
      --*=*) value=${flag#*=}; flag=${flag%%=*} ;;
      --*)
        [ $# -gt 0 ] || fail "$flag needs a value"
        value=$1
        shift
        ;;
      *) FILES="$FILES$NL$flag"; continue ;;
    esac
    case $flag in
      --split-by) SPLIT_BY=$value ;;
      --timings-type) TIMINGS_TYPE=$value ;;
      --time-default) TIME_DEFAULT=$value ;;
      --index) INDEX=$value ;;
      --total) TOTAL=$value ;;
      --command) COMMAND=$value; HAVE_COMMAND=1 ;;
      *) fail "unknown flag $flag (allowed: --split-by, --timings-type, --time-default, --index, --total, --show-counts, --command, --verbose)" ;;
    esac
  done
  case $SPLIT_BY in
    name|filesize|timings) ;;
    *) fail "--split-by=$SPLIT_BY is not one of name, filesize, timings" ;;
  esac
  case $TIMINGS_TYPE in
    filename|file) TIMINGS_TYPE=filename ;;
    classname) ;;
    testname|name) TIMINGS_TYPE=testname ;;
    autodetect) ;;
    *) fail "--timings-type=$TIMINGS_TYPE is not one of filename, classname, testname, autodetect" ;;
  esac
  case $TOTAL in
    ''|*[!0-9]*|0) fail "the node total '$TOTAL' (--total or CIRCLE_NODE_TOTAL) must be a whole number of at least 1" ;;
  esac
  case $INDEX in
    ''|*[!0-9]*) fail "the node index '$INDEX' (--index or CIRCLE_NODE_INDEX) must be a whole number" ;;
  esac
  [ "$INDEX" -lt "$TOTAL" ] || fail "the node index $INDEX (--index or CIRCLE_NODE_INDEX) must be below the node total $TOTAL (--total or CIRCLE_NODE_TOTAL)"
  local f old
  old=$IFS
  IFS=$NL
  set -f
  for f in $FILES; do
    [ -f "$f" ] && [ -r "$f" ] || fail "cannot read the file of names '$f'"
  done
  set +f
  IFS=$old
  if [ -n "$TIME_DEFAULT" ]; then
    f=$(seconds_of "$TIME_DEFAULT") || fail "--time-default=$TIME_DEFAULT is not a duration (e.g. 10s, 1.5m, 250ms)"
    TIME_DEFAULT=$f
  fi
}

# The names to split, one a line, sorted and without repeats: from the files named, else stdin.
read_items() {
  local list
  list=$(printf '%s\n' "$FILES" | sed '/^$/d')
  if [ -n "$list" ]; then
    printf '%s\n' "$list" | while IFS= read -r f; do cat -- "$f"; echo; done
  else
    cat
  fi | tr ' \t\r' '\n\n\n' | sed '/^$/d' | LC_ALL=C sort -u
}

# Weights of the items on stdin as "weight<TAB>item" lines, or nothing (and a message) to split by name.
timing_weights() {
  local data
  data=$GYRE_JOB_DIR/timings
  [ -s "$data" ] || data=/dev/null
  awk -F '\t' -v type="$TIMINGS_TYPE" -v dflt="$TIME_DEFAULT" -v pwd="$PWD/" -v data="$data" -v prog="$PROG" '
    function key(s) { if (index(s, pwd) == 1) s = substr(s, length(pwd) + 1); sub(/^\.\//, "", s); return s }
    BEGIN {
      col["filename"] = 1; col["classname"] = 2; col["testname"] = 3
      while ((getline line < data) > 0) {
        split(line, f, "\t")
        for (t in col) { k = col[t] == 1 ? key(f[col[t]]) : f[col[t]]; if (k != "") { seen[t, k] = 1; secs[t, k] += f[4] } }
        rows++
      }
    }
    { items[++n] = $0 }
    END {
      if (n == 0) exit
      if (type == "autodetect") {
        best = 0
        split("filename classname testname", order, " ")
        for (o = 1; o <= 3; o++) {
          c = 0
          for (i = 1; i <= n; i++) if ((order[o], key(items[i])) in seen) c++
          if (c > best) { best = c; type = order[o] }
        }
        if (best == 0) { print "Error auto-detecting timing type, falling back to weighting by name." > "/dev/stderr"; exit }
      }
      known = 0; sum = 0
      for (i = 1; i <= n; i++) {
        k = type == "filename" ? key(items[i]) : items[i]
        if ((type, k) in seen) { w[i] = secs[type, k]; has[i] = 1; known++; sum += w[i] }
      }
      if (known == 0) {
        print "Requested weighting by historical based timing, but they are not present. Falling back to weighting by name." > "/dev/stderr"
        exit
      }
      avg = dflt != "" ? dflt + 0 : sum / known
      for (i = 1; i <= n; i++) {
        if (!has[i]) { printf "No timing found for \"%s\"\n", items[i] > "/dev/stderr"; w[i] = avg }
        printf "%.0f\t%s\n", w[i] * 1000000, items[i]
      }
    }'
}

# Sizes in bytes of the files on stdin as "size<TAB>file" lines.
filesize_weights() {
  local f size
  while IFS= read -r f; do
    if [ -f "$f" ]; then size=$(wc -c < "$f" | tr -d ' '); else
      printf '%s: no file %s to weigh; counted as empty\n' "$PROG" "$f" >&2
      size=0
    fi
    printf '%s\t%s\n' "$size" "$f"
  done
}

# This node's share of the sorted items on stdin: round-robin by name, or, given weights, greedy
# bins (heaviest first, each into the lightest node so far; on a tie the one with fewer items,
# then the lower index).
split_items() {
  local items weights
  items=$(cat)
  [ -n "$items" ] || return 0
  weights=
  case $SPLIT_BY in
    timings) weights=$(printf '%s\n' "$items" | timing_weights) ;;
    filesize) weights=$(printf '%s\n' "$items" | filesize_weights) ;;
  esac
  if [ -z "$weights" ]; then
    printf '%s\n' "$items" | awk -v i="$INDEX" -v n="$TOTAL" -v show="$SHOW_COUNTS" -v prog="$PROG" '
      (NR - 1) % n == i { print; mine++ }
      END { if (show) printf "%s: node %d of %d: %d of %d tests\n", prog, i, n, mine, NR > "/dev/stderr" }'
    return 0
  fi
  printf '%s\n' "$weights" | LC_ALL=C sort -t "$TAB" -k1,1nr -k2,2 | awk -F '\t' -v i="$INDEX" -v n="$TOTAL" -v show="$SHOW_COUNTS" -v prog="$PROG" '
    {
      b = 0
      for (j = 1; j < n; j++) if (load[j] < load[b] || (load[j] == load[b] && count[j] < count[b])) b = j
      load[b] += $1; count[b]++
      if (b == i) print $2
    }
    END {
      if (show) for (j = 0; j < n; j++) printf "%s: node %d of %d: %d tests, weight %.3f%s\n", prog, j, n, count[j], load[j] / 1000000, j == i ? " (this node)" : "" > "/dev/stderr"
    }' | LC_ALL=C sort
}

tests_split() {
  parse_split_flags "$@"
  [ -z "$HAVE_COMMAND" ] || fail "--command is a flag of tests run, not tests split"
  read_items | split_items
}

tests_run() {
  parse_split_flags "$@"
  [ -n "$HAVE_COMMAND" ] && [ -n "$COMMAND" ] || fail "tests run needs --command, e.g. --command=\"xargs npm test --\""
  local share
  share=$(read_items | split_items) || exit 1
  if [ -n "$VERBOSE" ]; then
    printf '%s: node %s of %s, split by %s: %s tests\n' "$PROG" "$INDEX" "$TOTAL" "$SPLIT_BY" "$(printf '%s' "$share" | grep -c .)" >&2
    printf '%s\n' "$share" | sed '/^$/d; s/^/  /' >&2
    printf '%s: running %s\n' "$PROG" "$COMMAND" >&2
  fi
  if [ -z "$share" ]; then
    [ -z "$VERBOSE" ] || printf '%s: no tests for this node; the command does not run\n' "$PROG" >&2
    return 0
  fi
  printf '%s\n' "$share" | sh -c "$COMMAND"
}

# ---- step halt ----

step_halt() {
  [ -n "$GYRE_JOB_DIR" ] && [ -d "$GYRE_JOB_DIR" ] || fail "step halt: this is not a Gyre job (no GYRE_JOB_DIR)"
  : > "$GYRE_JOB_DIR/halt" || fail "step halt: cannot write $GYRE_JOB_DIR/halt"
}

# ---- commands ----

case ${1:-} in
  tests)
    shift
    sub=${1:-}
    [ $# -eq 0 ] || shift
    case $sub in
      glob) tests_glob "$@" ;;
      split) tests_split "$@" ;;
      run) tests_run "$@" ;;
      ''|-h|--help) usage 0 ;;
      *) fail "unknown tests command '$sub' (allowed: glob, split, run)" ;;
    esac
    ;;
  step)
    case ${2:-} in
      halt) step_halt ;;
      *) fail "unknown step command '${2:-}' (allowed: halt)" ;;
    esac
    ;;
  ''|-h|--help|help) usage 0 ;;
  *) fail "'$1' is not available inside a Gyre job (allowed: tests glob, tests split, tests run, step halt)" ;;
esac
