#!/usr/bin/env bash
# The main job of this release: create a virtual tape library, write a data
# stream that spans cartridges, read it back, prove it identical, show the
# library and the cartridges' labels, save a tree encrypted, verify it and
# restore it; then start the key manager, onboard the agent, save with a key
# from it, restore, and crypto-shred the save set.
#
#   bash deploy/quickstart.sh            # builds cinta-agent and cinta-keymgr (release) first
#   CINTA_AGENT=path/to/cinta-agent CINTA_KEYMGR=path/to/cinta-keymgr CINTA_DEMO_DIR=/tmp/x CINTA_DEMO_MB=24 bash deploy/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."

agent=${CINTA_AGENT:-}
km=${CINTA_KEYMGR:-}
ctl=${CINTA_CONTROLLER:-}
console=${CINTACTL:-}
if [ -z "$agent" ] || [ -z "$km" ] || [ -z "$ctl" ] || [ -z "$console" ]; then
  cargo build --release --locked -p cinta-agent -p cinta-keymgr -p cinta-controller -p cintactl
  agent=${agent:-target/release/cinta-agent}
  km=${km:-target/release/cinta-keymgr}
  ctl=${ctl:-target/release/cinta-controller}
  console=${console:-target/release/cintactl}
fi
sim=$PWD/deploy/lpar-simulator.sh
demo=${CINTA_DEMO_DIR:-${TMPDIR:-/tmp}/cinta-demo}
mb=${CINTA_DEMO_MB:-200}

# Start clean, but only remove a directory this script made.
if [ -e "$demo" ]; then
  if [ -f "$demo/.cinta-demo" ]; then rm -rf "$demo"; else
    echo "quickstart: $demo exists and is not a cinta demo; set CINTA_DEMO_DIR" >&2; exit 1; fi
fi
mkdir -p "$demo" && touch "$demo/.cinta-demo"
lib=$demo/library

step() { printf '\n== %s\n' "$*"; }

step "create a virtual tape library: 10 slots, 2 drives, 2 import/export ports, 64 MiB cartridges"
"$agent" library create "$lib" --name demo --slots 10 --drives 2 --ie-ports 2 --capacity 64M --early-warning 2M
"$agent" library add "$lib" --prefix CT --count 6

step "write ${mb} MB of data as one tape file (it spans cartridges at early warning)"
head -c $((mb * 1000 * 1000)) /dev/urandom > "$demo/data.bin"
"$agent" tape write "$lib" --name NIGHTLY.DATA --input "$demo/data.bin"

step "append a second tape file after the last one"
printf 'cinta quickstart %s\n' "$(date -u +%FT%TZ)" > "$demo/note.txt"
"$agent" tape write "$lib" --name NOTE --input "$demo/note.txt" --append --block-size 64K

step "read both back and compare"
"$agent" tape read "$lib" --volume CT0001 --file 1 --output "$demo/data.out"
cmp "$demo/data.bin" "$demo/data.out"
last=$("$agent" library list "$lib" --json | python3 -c 'import json,sys; c=[x for x in json.load(sys.stdin)["cartridges"] if x["state"]=="active"]; print(max(c, key=lambda x: x["last_written"] or 0)["barcode"])')
"$agent" tape read "$lib" --volume "$last" --file 2 --output "$demo/note.out"
cmp "$demo/note.txt" "$demo/note.out"
echo "identical: $(sha256sum < "$demo/data.out" | cut -c1-16)...  and the note"

step "the library"
"$agent" library list "$lib"

step "labels and tape files of the first and last cartridges"
"$agent" library dump "$lib" CT0001
"$agent" library dump "$lib" "$last"

step "an encrypted save of a sample tree (a local key file stands in for the key manager)"
mkdir -p "$demo/sample/home/payroll/2026" "$demo/sample/home/payroll/reports"
for m in 01 02 03 04 05 06 07 08 09 10 11; do head -c 2000000 /dev/urandom > "$demo/sample/home/payroll/2026/ledger-$m.dat"; done
printf 'close of day %s\n' "$(date -u +%F)" > "$demo/sample/home/payroll/reports/close.txt"
ln -s ../reports/close.txt "$demo/sample/home/payroll/2026/latest-close"
truncate -s 100M "$demo/sample/home/payroll/sparse.idx"
"$agent" key init --file "$demo/master.key"
"$agent" save "$lib" --key-file "$demo/master.key" --source "$demo/sample/home" --append
id=$("$agent" ls "$lib" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')

step "verify it (every block authenticated, every digest checked), list it, restore it elsewhere"
"$agent" verify "$lib" --key-file "$demo/master.key" --save-set "$id"
"$agent" ls "$lib"
"$agent" ls "$lib" --save-set "$id" --key-file "$demo/master.key" > "$demo/objects.txt"
head -8 "$demo/objects.txt"
"$agent" restore "$lib" --key-file "$demo/master.key" --save-set "$id" --to "$demo/restored"
diff -r "$demo/sample/home" "$demo/restored$(cd "$demo/sample/home" && pwd -P)" && echo "restored tree identical to the source"

step "send the first cartridge to the vault and bring it back"
"$agent" library export "$lib" CT0001
"$agent" library remove "$lib" CT0001 --to "$demo/vault-CT0001.tap"
"$agent" library insert "$lib" "$demo/vault-CT0001.tap" --barcode CT0001
"$agent" library import "$lib" CT0001
step "the key manager: a throwaway PKI, a new keystore, KMIP over mutual TLS"
"$km" pki init "$demo/pki" >/dev/null
"$km" pki issue "$demo/pki" keymgr --server --host 127.0.0.1 >/dev/null
"$km" pki issue "$demo/pki" agent --client >/dev/null
"$km" master-key new --out "$demo/keymgr-master.key"
cat > "$demo/keymgr.toml" <<CONF
listen = "127.0.0.1:0"
keystore = "keymgr/keystore.db"
[tls]
cert = "pki/keymgr.pem"
key = "pki/keymgr.key"
client_ca = "pki/ca.pem"
[master_key]
file = "keymgr-master.key"
CONF
kmc=(-c "$demo/keymgr.toml")
"$km" "${kmc[@]}" init
"$km" "${kmc[@]}" serve > "$demo/keymgr.out" 2> "$demo/keymgr.log" &
kpid=$!
trap 'kill $kpid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$demo/keymgr.out" && break; sleep 0.1; done
addr=$(sed -n 's/^cinta-keymgr listening on //p' "$demo/keymgr.out")
echo "cinta-keymgr serving on $addr"
cat > "$demo/kmip.toml" <<CONF
server = "$addr"
cert = "pki/agent.pem"
key = "pki/agent.key"
ca = "pki/ca.pem"
CONF

step "an unknown agent certificate is pending: no key until an administrator accepts it"
if "$agent" save "$lib" --kmip "$demo/kmip.toml" --source "$demo/sample/home/payroll/reports" --append 2> "$demo/pending.err"; then
  echo "quickstart: a pending client was served" >&2; exit 1
fi
grep -o 'pending approval[^"]*' "$demo/pending.err" | head -1
"$km" "${kmc[@]}" clients list
fp=$("$km" "${kmc[@]}" --json clients list | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["fingerprint"][:16])')
"$km" "${kmc[@]}" clients accept "$fp"

step "save with a fresh key from the key manager, restore with it"
"$agent" save "$lib" --kmip "$demo/kmip.toml" --source "$demo/sample/home/payroll/reports" --append
id2=$("$agent" ls "$lib" --json | python3 -c 'import json,sys; r=[x for x in json.load(sys.stdin) if x["key_id"].startswith("kmip:")]; print(r[-1]["id"])')
"$km" "${kmc[@]}" keys list
"$agent" restore "$lib" --kmip "$demo/kmip.toml" --save-set "$id2" --to "$demo/restored-kmip"
diff -r "$demo/sample/home/payroll/reports" "$demo/restored-kmip$(cd "$demo/sample/home/payroll/reports" && pwd -P)" && echo "restored with the key manager's key: identical"

step "expire it with --shred: the key is destroyed, so no copy of it can be read again"
"$agent" expire "$lib" --save-set "$id2" --shred --kmip "$demo/kmip.toml"
"$km" "${kmc[@]}" keys list
if "$agent" restore "$lib" --kmip "$demo/kmip.toml" --save-set "$id2" --to "$demo/after-shred" 2> "$demo/shred.err"; then
  echo "quickstart: a shredded save set was restored" >&2; exit 1
fi
"$agent" scan "$lib" --kmip "$demo/kmip.toml" > "$demo/scan.out" 2>&1 || true
grep -i "destroyed" "$demo/scan.out" | head -1
"$km" "${kmc[@]}" audit --tail 6

step "the night: a controller, two LPARs (simulated) with agents, the key manager"
night=$demo/night
# Library PAYROLL on production, and its MIMIX-style replica on contingency.
mkdir -p "$night/sim/PROD1/libs/PAYROLL" "$night/sim/CONT1/libs"
for f in 01 02 03; do head -c 300000 /dev/urandom > "$night/sim/PROD1/libs/PAYROLL/LEDGER$f.FILE"; done
printf 'close %s\n' "$(date -u +%F)" > "$night/sim/PROD1/libs/PAYROLL/CLOSE.FILE"
cp -r "$night/sim/PROD1/libs/PAYROLL" "$night/sim/CONT1/libs/"
"$km" "${kmc[@]}" groups set default --auto-accept true >/dev/null
for n in controller PROD1 CONT1 console; do
  if [ $n = controller ]; then "$km" pki issue "$demo/pki" $n --server --host 127.0.0.1 --host localhost >/dev/null
  else "$km" pki issue "$demo/pki" $n --client >/dev/null; fi
done
# 2026-11-24 20:00 in Madrid: the controller's clock is a file this script moves forward.
echo 1795546800 > "$night/clock"
cat > "$night/controller.toml" <<CONF
listen = "127.0.0.1:0"
catalog = "catalog.db"
heartbeat_seconds = 1
time_zone = "Europe/Madrid"
clock_file = "clock"
[tls]
cert = "$demo/pki/controller.pem"
key = "$demo/pki/controller.key"
client_ca = "$demo/pki/ca.pem"
[[operator]]
name = "operator"
cn = "console"
roles = ["operator"]
[ibmi]
save_library = "bash $sim $night/sim/{lpar} savlib {lib}"
restore_library = "bash $sim $night/sim/{lpar} rstlib {lib} {to}"
[[lpar]]
name = "PROD1"
role = "production"
[[lpar]]
name = "CONT1"
role = "contingency"
[[control_group]]
name = "PRE-CLOSE"
target = "production"
[[control_group.entry]]
library = "PAYROLL"
[[control_group]]
name = "POST-CLOSE"
target = "production"
[[control_group.entry]]
library = "PAYROLL"
[night]
pre_close = "PRE-CLOSE"
pre_close_at = "30 20 * * *"
post_close = "POST-CLOSE"
deadline = "0 23 * * *"
grace_minutes = 15
quiesce_probe = "bash $sim $night/sim/{lpar} users"
quiesce_grace_minutes = 10
force_signoff = "bash $sim $night/sim/{lpar} signoff"
[night.contingency]
replication_probe = "bash $sim $night/sim/{lpar} replication"
suspend = "bash $sim $night/sim/{lpar} end-apply"
resume = "bash $sim $night/sim/{lpar} start-apply"
CONF
"$ctl" -c "$night/controller.toml" serve > "$night/controller.out" 2> "$night/controller.log" &
cpid=$!
trap 'kill $kpid $cpid ${apids:-} 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$night/controller.out" && break; sleep 0.1; done
caddr=$(sed -n 's/^cinta-controller listening on //p' "$night/controller.out")
echo "cinta-controller serving on $caddr"
apids=""
for n in PROD1 CONT1; do
  "$agent" library create "$night/lib-$n" --name $n --slots 6 --drives 1 --ie-ports 1 --capacity 64M --early-warning 2M >/dev/null
  "$agent" library add "$night/lib-$n" --prefix "${n:0:2}" --count 3 >/dev/null
  printf 'server = "%s"\ncert = "%s"\nkey = "%s"\nca = "%s"\n' "$addr" "$demo/pki/$n.pem" "$demo/pki/$n.key" "$demo/pki/ca.pem" > "$night/kmip-$n.toml"
  cat > "$night/agent-$n.toml" <<CONF
name = "$n"
controller = "$caddr"
server_name = "localhost"
cert = "$demo/pki/$n.pem"
key = "$demo/pki/$n.key"
ca = "$demo/pki/ca.pem"
kmip = "kmip-$n.toml"
[[library]]
name = "default"
path = "lib-$n"
CONF
  "$agent" serve --config "$night/agent-$n.toml" 2>> "$night/agents.log" &
  apids="$apids $!"
done
export CINTA_CONTROLLER=$caddr CINTA_SERVER_NAME=localhost CINTA_CERT=$demo/pki/console.pem CINTA_KEY=$demo/pki/console.key CINTA_CA=$demo/pki/ca.pem
wait_for() { # what, shell test
  for _ in $(seq 300); do if eval "$2"; then return 0; fi; sleep 0.1; done
  echo "quickstart: timed out waiting for $1" >&2; exit 1
}
state() { "$console" --json tonight 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null || true; }
wait_for "both agents" '[ "$("$console" --json agents | python3 -c "import json,sys; print(sum(a[\"connected\"] for a in json.load(sys.stdin)))")" = 2 ]'
"$console" agents

step "20:31: the pre-close save runs on production"
echo $((1795546800 + 31 * 60)) > "$night/clock"
wait_for "the close window" '[ "$(state)" = close-window ]'
"$console" tonight

step "22:40: the close finishes, but 3 users are still signed on to production"
echo 3 > "$night/sim/PROD1/users"; touch "$night/sim/PROD1/stay"; echo 4 > "$night/sim/CONT1/backlog"; echo 1 > "$night/sim/CONT1/latency"
echo $((1795546800 + 160 * 60)) > "$night/clock"
"$console" close finished >/dev/null
wait_for "the quiesce wait" '[ "$(state)" = quiesce-wait ]'
echo "waiting for them to sign off..."

step "22:51: still there, and their jobs do not end when signed off by policy: fall back to the contingency LPAR (MIMIX-style: check, suspend, save, resume)"
echo $((1795546800 + 171 * 60)) > "$night/clock"
wait_for "the fallback" '[ "$(state)" = done ]'
"$console" tonight
"$console" events --limit 8

step "what was saved where, and with which key"
"$console" jobs --limit 12 | grep -v "0 save sets"
for n in PROD1 CONT1; do echo "-- library of $n"; "$agent" ls "$night/lib-$n"; done
"$console" volumes
"$km" "${kmc[@]}" keys list

step "the morning after: the payroll desk asks for library PAYROLL as it was at 20:40, restored as PAYRST"
rid=$("$console" --json restore request --server PROD1 --path PAYROLL.SAVF --at '2026-11-24 20:40' \
  --into-library PAYRST --ticket INC-1001 --requester 'Payroll desk' --reason 'ledger 02 overwritten' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
rstate() { "$console" --json restore show "$rid" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'; }
wait_for "the restore request" '[ "$(rstate)" = verified ]'
"$console" restore show "$rid"
diff -r "$night/sim/PROD1/libs/PAYROLL" "$night/sim/PROD1/libs/PAYRST" && echo "library PAYRST identical to PAYROLL as saved"
"$console" restore close "$rid" --note "payroll desk has its ledger" >/dev/null && echo "restore request $rid closed"

rm -rf "$demo/data.bin" "$demo/data.out" "$demo/vault-CT0001.tap" "$demo/restored" "$demo/restored-kmip"
printf '\nquickstart done: library in %s, key manager log in %s, the night in %s\n' "$lib" "$demo/keymgr.log" "$night"
