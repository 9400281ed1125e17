#!/usr/bin/env bash
# The main job of this release: create a virtual tape library, write a data
# stream that spans cartridges, read it back, prove it identical, show the
# library and the cartridges' labels, then save a tree encrypted, verify it
# and restore it.
#
#   bash deploy/quickstart.sh            # builds cinta-agent (release) first
#   CINTA_AGENT=path/to/cinta-agent CINTA_DEMO_DIR=/tmp/x CINTA_DEMO_MB=24 bash deploy/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."

agent=${CINTA_AGENT:-}
if [ -z "$agent" ]; then
  cargo build --release --locked -p cinta-agent
  agent=target/release/cinta-agent
fi
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
rm -rf "$demo/data.bin" "$demo/data.out" "$demo/vault-CT0001.tap" "$demo/restored"
printf '\nquickstart done: library in %s\n' "$lib"
