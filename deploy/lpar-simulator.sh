#!/usr/bin/env bash
# An IBM i LPAR SIMULATOR for tests and demos: answers the probes and hooks a
# night needs over a directory of state files, the way the real commands
# would on IBM i (WRKACTJOB for users, MIMIX DSPDGSTS / ENDDG / STRDG for
# replication). It is not IBM i and runs nothing on one.
#
#   lpar-simulator.sh DIR users          # prints the number of users signed on (DIR/users)
#   lpar-simulator.sh DIR close          # prints "finished" once the business close has ended (DIR/close)
#   lpar-simulator.sh DIR replication    # prints "apply=active|suspended backlog=N latency=S"
#   lpar-simulator.sh DIR end-apply      # suspends apply (controlled end); prints the recovery point
#   lpar-simulator.sh DIR start-apply    # resumes apply; it catches up (backlog 0)
#
# Switches: DIR/close (running or finished), DIR/users (connected users), DIR/backlog and DIR/latency
# (replication lag), DIR/fail-hook (end-apply and start-apply fail),
# DIR/seq (the journal sequence reported as the recovery point).
set -euo pipefail
dir=${1:?usage: lpar-simulator.sh DIR users|close|replication|end-apply|start-apply}
cmd=${2:?usage: lpar-simulator.sh DIR users|close|replication|end-apply|start-apply}
mkdir -p "$dir"
get() { if [ -f "$dir/$1" ]; then tr -d ' \n' < "$dir/$1"; else echo "$2"; fi; }
case $cmd in
    users) printf '%s\n' "$(get users 0)" ;;
    close) printf '%s\n' "$(get close running)" ;;
    replication) echo "apply=$(get apply active) backlog=$(get backlog 0) latency=$(get latency 0)" ;;
    end-apply)
        if [ -f "$dir/fail-hook" ]; then echo "ENDDG failed: data group busy (simulated)" >&2; exit 1; fi
        echo suspended > "$dir/apply"
        echo "recovery point: journal sequence $(get seq 1000) at $(date -u +%FT%TZ)" ;;
    start-apply)
        if [ -f "$dir/fail-hook" ]; then echo "STRDG failed (simulated)" >&2; exit 1; fi
        echo active > "$dir/apply"; echo 0 > "$dir/backlog"; echo 0 > "$dir/latency"
        echo "apply restarted; caught up" ;;
    *) echo "lpar-simulator.sh: unknown command $cmd" >&2; exit 2 ;;
esac
