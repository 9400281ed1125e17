#!/usr/bin/env bash
# Benchmark (not a test): cinta save and restore beside tar | openssl enc,
# restic, borg and dd, on the same data, in one run, with ratios.
#
#   bash deploy/bench-saveset.sh [--dir DIR] [--large-gib N] [--small N] [--tmpfs]
#
# --dir    where data, archives and restores go (default /var/tmp/cinta-bench)
# --tmpfs  run in /dev/shm instead (the disk is not the limit there)
# Installs restic, borgbackup, openssl and time from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=/var/tmp/cinta-bench; large_gib=4; small=100000
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=$2; shift 2;; --large-gib) large_gib=$2; shift 2;; --small) small=$2; shift 2;;
    --tmpfs) dir=/dev/shm/cinta-bench; shift;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done

need=()
for c in restic borg openssl; do command -v $c >/dev/null || need+=("$c"); done
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${need[@]}" | sed 's/^borg$/borgbackup/')
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
fi
cargo build --release --locked -q -p cinta-agent
agent=$PWD/target/release/cinta-agent

rm -rf "$dir"; mkdir -p "$dir"
# Whatever happens, the data set and the archives do not stay behind.
trap 'rm -rf "$dir"' EXIT
# At the peak: the data set, and an archive and a restore of its large files.
need_kib=$(( (3 * large_gib * 1048576 + small * 12) * 21 / 20 ))
have_kib=$(df -Pk "$dir" | awk 'NR == 2 {print $4}')
if [ "$have_kib" -lt "$need_kib" ]; then
  echo "$dir has $((have_kib / 1048576)) GiB free; this run needs about $((need_kib / 1048576 + 1)) GiB (fewer with --large-gib/--small)" >&2
  exit 1
fi
data=$dir/data
echo "== data set: $large_gib GiB of large files, $small small files (1-16 KiB) in $dir"
mkdir -p "$data/large" "$data/small"
for i in $(seq 1 "$large_gib"); do
  # openssl ends on SIGPIPE when head has enough: check the size instead of the status.
  { openssl enc -aes-128-ctr -nosalt -pass pass:"$i" -pbkdf2 < /dev/zero 2>/dev/null || true; } | head -c $((1 << 30)) > "$data/large/part-$i.bin"
  [ "$(stat -c %s "$data/large/part-$i.bin")" = $((1 << 30)) ] || { echo "could not make $data/large/part-$i.bin" >&2; exit 1; }
done
python3 - "$data/small" "$small" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2]); random.seed(1)
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:03d}")
    if i % 1000 == 0: os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}"), "wb") as f: f.write(os.urandom(random.randint(1024, 16384)))
PY
sync

drop() {
  sync; if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi
  # On tmpfs in a VM, the first touch of fresh memory costs more than the copy:
  # touch and free as much as a tool will write, so every tool starts equal.
  case $dir in /dev/shm/*) dd if=/dev/zero of="$dir/.warm" bs=1M count=$((${warm_mb:-0} + 1)) status=none; rm -f "$dir/.warm";; esac
}
# run NAME CMD...: times a shell command (with a final sync), prints "seconds maxrss_kib"
run() { drop; /usr/bin/time -f "%e %M" -o "$dir/.time" bash -c "$1; sync" >/dev/null 2>"$dir/.err" || { cat "$dir/.err" >&2; return 1; }; cat "$dir/.time"; }

results=()
record() { results+=("$1|$2|$3|$4|$5"); }   # set|tool|phase|seconds|rss

for set in large small; do
  src=$data/$set
  bytes=$(du -sb "$src" | cut -f1); files=$(find "$src" -type f | wc -l)
  echo "== $set: $((bytes / 1000000)) MB, $files files"
  warm_mb=$((bytes * 2 / 1048576))
  # cinta
  rm -rf "$dir/lib" "$dir/key" "$dir/r"; "$agent" library create "$dir/lib" --slots 4 --drives 1 --capacity 1T >/dev/null
  "$agent" library add "$dir/lib" --prefix BN --count 2 >/dev/null; "$agent" key init --file "$dir/key" >/dev/null
  read -r s m < <(run "'$agent' save '$dir/lib' --key-file '$dir/key' --source '$src' --json > '$dir/save.json'"); record $set cinta save "$s" "$m"
  id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["report"]["save_set"])' "$dir/save.json")
  read -r s m < <(run "'$agent' restore '$dir/lib' --key-file '$dir/key' --save-set $id --to '$dir/r' --json"); record $set cinta restore "$s" "$m"
  rm -rf "$dir/lib" "$dir/r"
  # tar | openssl enc -aes-256-ctr
  read -r s m < <(run "tar -cf - -C '$data' $set | openssl enc -aes-256-ctr -pbkdf2 -pass pass:bench > '$dir/t.enc'"); record $set tar+openssl save "$s" "$m"
  mkdir -p "$dir/r"
  read -r s m < <(run "openssl enc -d -aes-256-ctr -pbkdf2 -pass pass:bench < '$dir/t.enc' | tar -xf - -C '$dir/r'"); record $set tar+openssl restore "$s" "$m"
  rm -rf "$dir/t.enc" "$dir/r"
  if [ $set = small ]; then
    # Plain tar, nothing encrypted: what one stream of these files costs the
    # file system (reading them all; creating them all), the small files' copy.
    read -r s m < <(run "tar -cf '$dir/t.tar' -C '$data' $set"); record $set tar save "$s" "$m"
    mkdir -p "$dir/r"
    read -r s m < <(run "tar -xf '$dir/t.tar' -C '$dir/r'"); record $set tar restore "$s" "$m"
    rm -rf "$dir/t.tar" "$dir/r"
  fi
  # restic
  export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$dir/restic
  restic init -q >/dev/null
  read -r s m < <(run "restic backup -q '$src'"); record $set restic save "$s" "$m"
  read -r s m < <(run "restic restore -q latest --target '$dir/r'"); record $set restic restore "$s" "$m"
  rm -rf "$dir/restic" "$dir/r"
  # borg
  export BORG_PASSPHRASE=bench BORG_REPO=$dir/borg BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
  borg init -e repokey >/dev/null 2>&1
  read -r s m < <(run "borg create '::a' '$src'"); record $set borg save "$s" "$m"
  mkdir -p "$dir/r"
  read -r s m < <(run "cd '$dir/r' && borg extract '::a'"); record $set borg restore "$s" "$m"
  rm -rf "$dir/borg" "$dir/r"
  if [ $set = large ]; then
    # dd: a save reads the files and writes them, and so does dd copying them;
    # a restore reads them back and writes them again: dd copies the copies.
    mkdir -p "$dir/dd" "$dir/dd2"
    read -r s m < <(run "for f in '$src'/*; do dd if=\"\$f\" of='$dir/dd/'\"\${f##*/}\" bs=1M conv=fdatasync status=none; done"); record $set dd save "$s" "$m"
    read -r s m < <(run "for f in '$dir/dd'/*; do dd if=\"\$f\" of='$dir/dd2/'\"\${f##*/}\" bs=1M conv=fdatasync status=none; done"); record $set dd restore "$s" "$m"
    rm -rf "$dir/dd" "$dir/dd2"
    # The disk's write ceiling: the same byte count written from /dev/zero, nothing read.
    read -r s m < <(run "dd if=/dev/zero of='$dir/dd.bin' bs=1M count=$((bytes / 1048576)) conv=fdatasync status=none"); record $set dd-write save "$s" "$m"
    rm -f "$dir/dd.bin"
  fi
  echo "$set $bytes $files" >> "$dir/.sets"
done

python3 - "$dir/.sets" "${results[@]}" <<'PY'
import sys
sets = {l.split()[0]: (int(l.split()[1]), int(l.split()[2])) for l in open(sys.argv[1])}
rows = [r.split("|") for r in sys.argv[2:]]
t = {(s, tool, ph): (float(sec), int(rss)) for s, tool, ph, sec, rss in rows}
print(f"\n{'set':<6} {'tool':<12} {'phase':<8} {'MB/s':>8} {'files/s':>9} {'peak RSS':>10} {'cinta/x':>8}")
for (s, tool, ph), (sec, rss) in t.items():
    b, n = sets[s]
    c = t[(s, "cinta", ph)][0]
    print(f"{s:<6} {tool:<12} {ph:<8} {b / sec / 1e6:>8.0f} {n / sec:>9.0f} {rss / 1024:>8.0f} MiB {sec / c:>8.2f}")
print("\ncinta/x: how many times faster cinta is than x (>1: cinta faster). dd: save copies the large files")
print("(read and write, as a save does); restore copies the copies. dd-write: the same bytes from /dev/zero,")
print("nothing read (the disk's write ceiling). tar: plain tar of the small files to a file and back, nothing")
print("encrypted. Every command ends with sync; caches are dropped before each.")
# The goal of 3x restic and borg, beside what copying the same data took here:
# dd for the large files, plain tar for the small ones.
copy = {"large": "dd", "small": "tar"}
for (s, tool, ph), (sec, _) in t.items():
    c = t[(s, "cinta", ph)][0]
    if tool not in ("restic", "borg") or sec / c >= 3 or (s, copy[s], ph) not in t:
        continue
    b, n = sets[s]
    need, cp = sec / 3, t[(s, copy[s], ph)][0]
    unit = (lambda x: f"{b / x / 1e6:.0f} MB/s") if s == "large" else (lambda x: f"{n / x:.0f} files/s")
    print(f"3x {tool} ({s} {ph}) needs {unit(need)}; {copy[s]} copying the same took {unit(cp)}"
          f": {'more than the copy did' if need < cp else 'within what the copy did'}.")
PY
