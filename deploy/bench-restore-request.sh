#!/usr/bin/env bash
# Benchmark (not a test): what a restore request costs beyond the restore
# itself. The same objects are restored by a direct `cinta-agent restore`
# and by `cintactl restore request` (policy check, job, agent, restore,
# outcome, verified), each --runs times; prints the medians and the overhead.
# Goal: under 1 s of overhead.
#
#   bash deploy/bench-restore-request.sh [--mb 200] [--runs 3] [--dir /var/tmp/cinta-rr-bench]
set -euo pipefail
cd "$(dirname "$0")/.."
mb=200
runs=3
dir=${TMPDIR:-/tmp}/cinta-rr-bench
while (($#)); do
    case $1 in
        --mb) mb=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        *) echo "usage: $0 [--mb N] [--runs N] [--dir DIR]" >&2; exit 2 ;;
    esac
done
cargo build --release --locked -p cinta-agent -p cinta-keymgr -p cinta-controller -p cintactl >&2
bin=$PWD/target/release
rm -rf "$dir"; mkdir -p "$dir/data"; cd "$dir"
# The data: files of 1 MiB.
for i in $(seq "$mb"); do head -c 1048576 /dev/urandom > "data/f$i.bin"; done
"$bin/cinta-keymgr" pki init pki >/dev/null
"$bin/cinta-keymgr" pki issue pki controller --server --host 127.0.0.1 --host localhost >/dev/null
for n in PROD1 console; do "$bin/cinta-keymgr" pki issue pki $n --client >/dev/null; done
"$bin/cinta-agent" key init --file master.key >/dev/null
"$bin/cinta-agent" library create lib --slots 10 --drives 1 --capacity 64G >/dev/null
"$bin/cinta-agent" library add lib --prefix BE --count 3 >/dev/null
cat > controller.toml <<CONF
listen = "127.0.0.1:0"
catalog = "catalog.db"
heartbeat_seconds = 1
[tls]
cert = "$dir/pki/controller.pem"
key = "$dir/pki/controller.key"
client_ca = "$dir/pki/ca.pem"
[[operator]]
name = "bench"
cn = "console"
roles = ["admin"]
[[lpar]]
name = "PROD1"
role = "production"
[[control_group]]
name = "BENCH"
target = "production"
[[control_group.entry]]
path = "$dir/data"
CONF
"$bin/cinta-controller" --config controller.toml serve > controller.out 2> controller.log &
cpid=$!
trap 'kill $cpid ${apid:-} 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" controller.out && break; sleep 0.1; done
caddr=$(sed -n 's/^cinta-controller listening on //p' controller.out)
cat > agent.toml <<CONF
name = "PROD1"
controller = "$caddr"
server_name = "localhost"
cert = "$dir/pki/PROD1.pem"
key = "$dir/pki/PROD1.key"
ca = "$dir/pki/ca.pem"
key_file = "$dir/master.key"
[[library]]
name = "default"
path = "$dir/lib"
CONF
"$bin/cinta-agent" serve --config agent.toml 2> agent.log &
apid=$!
export CINTA_CONTROLLER=$caddr CINTA_SERVER_NAME=localhost CINTA_CERT=$dir/pki/console.pem CINTA_KEY=$dir/pki/console.key CINTA_CA=$dir/pki/ca.pem
ctl=$bin/cintactl
for _ in $(seq 100); do "$ctl" --json agents | grep -q '"connected": true' && break; sleep 0.1; done
id=$("$ctl" --json run BENCH --wait | python3 -c 'import json,sys; print(json.load(sys.stdin)["save_sets"][0]["id"])')
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
direct=()
for r in $(seq "$runs"); do
    rm -rf "out-direct"; sync
    t0=$(now)
    "$bin/cinta-agent" restore lib --key-file master.key --save-set "$id" --to out-direct >/dev/null
    t1=$(now)
    direct+=("$(echo "$t1 - $t0" | bc)")
done
request=()
for r in $(seq "$runs"); do
    rm -rf "out-request"; sync
    t0=$(now)
    rid=$("$ctl" --json restore request --server PROD1 --path '*' --to "$dir/out-request" \
        --ticket "BENCH-$r" --requester bench | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    while [ "$("$ctl" --json restore show "$rid" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')" != verified ]; do
        sleep 0.05
    done
    t1=$(now)
    request+=("$(echo "$t1 - $t0" | bc)")
    "$ctl" restore close "$rid" >/dev/null
done
d=$(printf '%s\n' "${direct[@]}" | median)
q=$(printf '%s\n' "${request[@]}" | median)
printf '%s MiB in %s files, %s runs each (medians)\n' "$mb" "$mb" "$runs"
printf 'direct cinta-agent restore:      %6.2f s\n' "$d"
printf 'restore request to verified:     %6.2f s\n' "$q"
printf 'overhead of the request:         %6.2f s (goal: under 1 s)\n' "$(echo "$q - $d" | bc)"
