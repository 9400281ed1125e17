#!/usr/bin/env bash
# Benchmark (not a test): KMIP round trips per second and latency of
# cinta-keymgr beside PyKMIP's own server, in one run, same load generator
# (`cinta-keymgr bench`, Rust, one TLS session per connection), same
# machine, same throwaway PKI (ECDSA P-256), both keystores on the same disk.
#
#   bash deploy/bench-keymgr.sh [--seconds 10] [--dir /var/tmp/cinta-kmip-bench]
#
# Prints, for Create+Get round trips and for Get alone, over 1 and over 16
# connections: round trips/s, p50 and p99 latency, and cinta/PyKMIP ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=10
dir=${TMPDIR:-/tmp}/cinta-kmip-bench
while (($#)); do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        *) echo "usage: $0 [--seconds N] [--dir DIR]" >&2; exit 2 ;;
    esac
done
cargo build --release --locked -p cinta-keymgr >&2
km=$PWD/target/release/cinta-keymgr
py=$(bash tests/python/setup.sh)
rm -rf "$dir"; mkdir -p "$dir"; cd "$dir"

"$km" pki init pki >/dev/null
"$km" pki issue pki server --server --host 127.0.0.1 --host localhost >/dev/null
"$km" pki issue pki bench --client >/dev/null

# cinta-keymgr, auto-accepting the bench client.
"$km" master-key new --out master.key >/dev/null
cat > keymgr.toml <<CONF
listen = "127.0.0.1:0"
keystore = "cinta/keystore.db"
[tls]
cert = "pki/server.pem"
key = "pki/server.key"
client_ca = "pki/ca.pem"
[master_key]
file = "master.key"
CONF
"$km" -c keymgr.toml init >/dev/null
"$km" -c keymgr.toml groups set default --auto-accept true >/dev/null
"$km" -c keymgr.toml serve > cinta.out 2> cinta.log &
cinta_pid=$!
# PyKMIP's server, TLS 1.2 with the ECDHE-ECDSA-AES-GCM suites its clients use.
mkdir -p pykmip/policies
pyport=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > pykmip/server.conf <<CONF
[server]
hostname=127.0.0.1
port=$pyport
certificate_path=$dir/pki/server.pem
key_path=$dir/pki/server.key
ca_path=$dir/pki/ca.pem
auth_suite=TLS1.2
policy_path=$dir/pykmip/policies
enable_tls_client_auth=True
tls_cipher_suites=
    TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
logging_level=WARNING
database_path=$dir/pykmip/pykmip.db
CONF
"$(dirname "$py")/pykmip-server" -f pykmip/server.conf -l pykmip/server.log > pykmip/stdout 2>&1 &
py_pid=$!
trap 'kill $cinta_pid $py_pid 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q "listening on" cinta.out && "$py" -c "import socket; socket.create_connection(('127.0.0.1',$pyport),0.2)" 2>/dev/null && break
    sleep 0.1
done
cinta_addr=$(sed -n 's/^cinta-keymgr listening on //p' cinta.out)
[ -n "$cinta_addr" ] || { echo "cinta-keymgr did not start:"; cat cinta.log; exit 1; }

run() { # server label mode connections -> JSON line
    "$km" --json bench --server "$1" --cert pki/bench.pem --key pki/bench.key --ca pki/ca.pem \
        --mode "$3" --connections "$4" --seconds "$seconds" --version 1.2 |
        "$py" -c "import json,sys; r=json.load(sys.stdin); r['server']='$2'; print(json.dumps(r))"
}
results=results.jsonl; : > "$results"
for mode in create-get get; do
    for n in 1 16; do
        echo "running $mode over $n connection(s), ${seconds}s each..." >&2
        run "$cinta_addr" cinta-keymgr "$mode" "$n" >> "$results"
        run "127.0.0.1:$pyport" PyKMIP "$mode" "$n" >> "$results"
    done
done
"$py" - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
key = lambda r: (r["mode"], r["connections"])
by = {}
for r in rows:
    by.setdefault(key(r), {})[r["server"]] = r
print()
print("%-10s %5s  %-13s %10s %9s %9s %7s" % ("mode", "conns", "server", "trips/s", "p50 ms", "p99 ms", "errors"))
for k, v in by.items():
    for s in ("cinta-keymgr", "PyKMIP"):
        r = v[s]
        print("%-10s %5d  %-13s %10.0f %9.2f %9.2f %7d" % (r["mode"], r["connections"], s, r["per_second"], r["p50_ms"], r["p99_ms"], r["errors"]))
    c, p = v["cinta-keymgr"]["per_second"], v["PyKMIP"]["per_second"]
    print("%-10s %5d  %-13s %9.1fx" % (k[0], k[1], "ratio", c / p if p else float("inf")))
PY
