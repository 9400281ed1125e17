#!/usr/bin/env bash
# An IBM i LPAR SIMULATOR for tests and demos: answers the probes and hooks a
# night needs over a directory of state files, the way the real commands
# would on IBM i (WRKACTJOB for users, MIMIX DSPDGSTS / ENDDG / STRDG for
# replication, SAVLIB / RSTLIB through a save file for libraries). It is not
# IBM i and runs nothing on one; its "save file" is a tar of DIR/libs/LIB.
#
#   lpar-simulator.sh DIR users          # prints the number of users signed on (DIR/users)
#   lpar-simulator.sh DIR close          # prints "finished" once the business close has ended (DIR/close)
#   lpar-simulator.sh DIR replication    # prints "apply=active|suspended backlog=N latency=S"
#   lpar-simulator.sh DIR end-apply      # suspends apply (controlled end); prints the recovery point
#   lpar-simulator.sh DIR start-apply    # resumes apply; it catches up (backlog 0)
#   lpar-simulator.sh DIR savlib LIB     # writes library LIB's save file (DIR/libs/LIB) to standard output
#   lpar-simulator.sh DIR rstlib LIB [TO] # restores library LIB (as TO) from a save file on standard input
#   lpar-simulator.sh DIR signoff        # ends the interactive jobs (users 0), like ENDJOB of each
#   lpar-simulator.sh DIR subsystem SBS  # exits 0 if subsystem SBS is active (DIR/down-SBS: inactive)
#
# Switches: DIR/close (running or finished), DIR/users (connected users), DIR/backlog and DIR/latency
# (replication lag), DIR/fail-hook (end-apply and start-apply fail), DIR/fail-resume (N: the
# next N start-apply fail),
# DIR/seq (the journal sequence reported as the recovery point), DIR/fail-save (savlib
# writes part of the save file, then fails), DIR/slow-save (seconds savlib pauses after
# the first 2.5 MB), DIR/stay (signoff leaves the users on).
set -euo pipefail
usage="usage: lpar-simulator.sh DIR users|close|replication|end-apply|start-apply|savlib LIB|rstlib LIB [TO]|signoff|subsystem SBS"
dir=${1:?$usage}
cmd=${2:?$usage}
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
        n=$(get fail-resume 0)
        if [ "$n" -gt 0 ]; then echo $((n - 1)) > "$dir/fail-resume"; echo "STRDG failed: data group locked (simulated, $((n - 1)) failures left)" >&2; exit 1; fi
        echo active > "$dir/apply"; echo 0 > "$dir/backlog"; echo 0 > "$dir/latency"
        echo "apply restarted; caught up" ;;
    savlib)
        lib=${3:?$usage}
        echo $$ > "$dir/savlib.pid"
        if [ ! -d "$dir/libs/$lib" ]; then echo "CPF3781: Library $lib not found. (simulated)" >&2; exit 1; fi
        if [ -f "$dir/fail-save" ]; then
            tar -C "$dir/libs" -cf - "$lib" 2>/dev/null | head -c 10000 || true
            echo "CPF3777: $lib not saved: object in use (simulated)" >&2; exit 1
        fi
        if [ -f "$dir/slow-save" ]; then
            t=$(mktemp); tar -C "$dir/libs" -cf "$t" "$lib"
            head -c 2500000 "$t"; sleep "$(get slow-save 3)"; tail -c +2500001 "$t"; rm -f "$t"
        else
            tar -C "$dir/libs" -cf - "$lib"
        fi
        echo "CPC3722: objects saved from library $lib. (simulated)" >&2 ;;
    rstlib)
        lib=${3:?$usage}; to=${4:-$lib}
        mkdir -p "$dir/libs"; t=$(mktemp -d)
        if ! tar -C "$t" -xf - "$lib"; then rm -rf "$t"; echo "CPF3780: no library $lib in the save file (simulated)" >&2; exit 1; fi
        rm -rf "${dir:?}/libs/$to"; mv "$t/$lib" "$dir/libs/$to"; rm -rf "$t"
        echo "CPC3703: objects restored to library $to from $lib. (simulated)" ;;
    subsystem)
        sbs=${3:?$usage}
        if [ -f "$dir/down-$sbs" ]; then echo "$sbs INACTIVE (simulated WRKSBS)"; exit 1; fi
        echo "$sbs ACTIVE (simulated WRKSBS)" ;;
    signoff)
        if [ -f "$dir/stay" ]; then echo "ENDJOB: $(get users 0) jobs would not end (simulated)"; exit 0; fi
        echo "ended $(get users 0) interactive jobs"; echo 0 > "$dir/users" ;;
    *) echo "lpar-simulator.sh: unknown command $cmd" >&2; exit 2 ;;
esac
