# What scripts/bench-compare and scripts/bench-cluster share: options, the network
# namespace they run load in, priority, output folder. Sourced by them, not run.
#
# Sourcing it moves to the repository's root (ROOT). The script then sets its defaults
# (mode, repeat, scenarios), may define two hooks:
#   bench_extra_arg ARG   handles an option the common ones do not cover; returns 1 if
#                         it does not know ARG either
#   bench_before_netns    work to do once, outside the namespace, after the build
#                         (e.g. npm install); runs before the script re-enters itself
# and calls, in this order:
#   bench_parse_args "$@"          sets quick, nice_level, repeat, scenarios, mode, orig_args
#   bench_enter_netns [host-smoke] re-enters the script inside `unshare -n`; with host-smoke,
#                                  --smoke falls back to the host's loopback without root
#   bench_inside_netns             sets BENCH, DUET, nice_prefix, next_port; system limits
#   bench_output SMOKE SUFFIX      sets stamp, out, raw (mktemp /tmp/SMOKE.XXXXXX for
#                                  --smoke, else bench/results/<stamp>SUFFIX)
#   bench_restore_nice             on exit
#   bench_finish FILE              last: shows the results file, fails if a run failed
# Helpers for the results: say, bench_wait_ready, bench_md_about, bench_md_failures.

bench_name=${0##*/}
# The repository; the scripts run from it.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
quick=0
nice_level=0

say() { printf '%s\n' "$*" >&2; }

# The script's header comment, from the line after `#!` up to its first other line.
bench_help() {
  sed -n '2,${/^#/!q;s/^# \{0,1\}//;p;}' "$0"
}

bench_parse_args() {
  orig_args=("$@")
  while [ $# -gt 0 ]; do
    case "$1" in
      --smoke) mode=smoke ;;
      --repeat) repeat=${2:?--repeat needs a number}; shift ;;
      --quick) quick=1 ;;
      --nice) nice_level=${2:?--nice needs a number}; shift ;;
      --scenarios) scenarios=${2:?--scenarios needs a list}; shift ;;
      -h|--help) bench_help; exit 0 ;;
      *)
        if ! { declare -F bench_extra_arg >/dev/null && bench_extra_arg "$1"; }; then
          echo "$bench_name: unknown argument $1 (see --help)" >&2
          exit 64
        fi
        ;;
    esac
    shift
  done
  case "$nice_level" in ''|*[!0-9]*) echo "$bench_name: --nice needs a number 0..19" >&2; exit 64 ;; esac
  case "$repeat" in ''|*[!0-9]*) echo "$bench_name: --repeat needs a number" >&2; exit 64 ;; esac
  [ "$repeat" -ge 1 ] && [ "$repeat" -le 20 ] || { echo "$bench_name: --repeat must be 1..20" >&2; exit 64; }
}

# Outside the namespace: build, run bench_before_netns, then re-enter the script inside
# `unshare -n` (a network namespace holding only a loopback interface). Inside (the
# script's second life, DUET_BENCH_NETNS set), returns at once.
bench_enter_netns() { # $1 = host-smoke: --smoke may run on the host's loopback
  [ -z "${DUET_BENCH_NETNS:-}" ] || return 0
  if [ -z "${DUET_BENCH_NO_BUILD:-}" ]; then
    say "==> cargo build --release -p duet -p duet-bench"
    cargo build --release -q -p duet -p duet-bench
  fi
  if declare -F bench_before_netns >/dev/null; then bench_before_netns; fi
  if unshare -n -- true 2>/dev/null; then
    export DUET_BENCH_NETNS=1
    exec unshare -n -- bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "${orig_args[@]}"
  elif [ "${1:-}" = host-smoke ] && [ "$mode" = smoke ]; then
    say "$bench_name: cannot create a network namespace (not root?); smoke run on the host's loopback"
    export DUET_BENCH_NETNS=host
  else
    say "$bench_name: cannot create a network namespace (unshare -n needs root); refusing to run load outside it"
    exit 1
  fi
}

# Inside the namespace: the binaries, the namespace's network settings, open files, and
# the priority asked for with --nice (nice_prefix: the command prefix that applies it).
bench_inside_netns() {
  local bin="${CARGO_TARGET_DIR:-$ROOT/target}/release"
  BENCH="$bin/duet-bench"
  DUET="${DUET_BIN:-$bin/duet}"
  [ -x "$BENCH" ] || { say "$bench_name: $BENCH is missing (build it first)"; exit 1; }
  [ -x "$DUET" ] || { say "$bench_name: $DUET is missing (build it first)"; exit 1; }
  if [ "$DUET_BENCH_NETNS" = 1 ]; then
    # Per-namespace settings: more ephemeral ports for ~19,000 connections plus the
    # TIME_WAIT of thousands of call setups; a deeper accept queue for connection bursts.
    # Servers listen below 16384 (see next_port), outside this range: a client socket in
    # TIME_WAIT on a server's port would make its listen() fail with EADDRINUSE.
    sysctl -qw net.ipv4.ip_local_port_range="16384 65000" 2>/dev/null || true
    sysctl -qw net.core.somaxconn=65535 2>/dev/null || true
  fi
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

  nice_prefix=()
  if [ "$nice_level" != 0 ]; then
    # With sched_autogroup (on by default), nice only orders processes within one
    # session; the session's own weight is set through /proc/self/autogroup. The old
    # weight is restored on exit (the autogroup is the caller's whole session).
    old_autogroup_nice=$(sed -n 's/.* nice //p' /proc/self/autogroup 2>/dev/null || true)
    [ -w /proc/self/autogroup ] && { echo "-$nice_level" >/proc/self/autogroup; } 2>/dev/null || true
    nice_prefix=(nice -n "-$nice_level")
  fi

  # Below every ephemeral port range (the namespace's starts at 16384, Linux's default at
  # 32768), so no client socket can hold a server's port.
  next_port=$((10000 + RANDOM % 5000))
}

# Waits (bounded: 150 tries of 0.1 s) until a WebSocket server answers at `url`; fails,
# showing its log, if the process exits first or the tries run out.
bench_wait_ready() { # $1 = url, $2 = pid, $3 = log, $4 = what it is (for the message)
  local tries=0
  until "$BENCH" wait-ready --url "$1" --timeout 0.1 2>/dev/null; do
    tries=$((tries + 1))
    if ! kill -0 "$2" 2>/dev/null || [ $tries -ge 150 ]; then
      say "$bench_name: $4 did not start; its log:"
      cat "$3" >&2
      return 1
    fi
  done
}

# The lines every results file starts with, after its title: command, commit, machine.
bench_md_about() {
  echo "- command: \`scripts/$bench_name ${orig_args[*]}\`"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (work tree has changes)')"
  echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
}

# The results file's last section, when any run failed or left a note in `raw`.
bench_md_failures() {
  if grep -q '^\(FAILED\|NOTE\) ' "$raw"; then
    echo
    echo "Failures and notes:"
    echo
    grep '^\(FAILED\|NOTE\) ' "$raw" | sed 's/^/- /'
  fi
}

# Shows the results file and where the output is; fails if any run failed.
bench_finish() { # $1 = the results file
  rm -f "$out/run.txt"
  cat "$1"
  say "$bench_name: results in $out"
  [ "$failures" = 0 ]
}

bench_restore_nice() {
  if [ -n "${old_autogroup_nice:-}" ]; then
    { echo "$old_autogroup_nice" >/proc/self/autogroup; } 2>/dev/null || true
  fi
}

bench_output() { # $1 = mktemp name for --smoke, $2 = suffix of the results folder
  stamp=$(date +%Y%m%d-%H%M%S)
  if [ "$mode" = smoke ]; then
    out="$(mktemp -d "/tmp/$1.XXXXXX")"
  else
    out="$ROOT/bench/results/$stamp$2"
    mkdir -p "$out"
  fi
  raw="$out/raw.txt"
  : >"$raw"
}
