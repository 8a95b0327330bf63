#!/usr/bin/env bash
# Rebuild one asset of one epoch WITHOUT nodekeep.backup: age, zstd, jq and coreutils only.
#
#   scripts/restore-by-hand.sh REPO NODE EPOCH ASSET IDENTITY OUT
#
# REPO      a local repository, or a copy of the bucket (aws s3 sync s3://BUCKET/PREFIX REPO)
# IDENTITY  the age identity file (0600)
# OUT       a path that does not exist yet: the SQLite file, or the directory (rocksdb, files)
#
# Check the manifest's signature FIRST (it is what makes every checksum below trustworthy):
#   echo "NODE $(cat NODE.pub)" > allowed_signers
#   ssh-keygen -Y verify -f allowed_signers -I NODE -n nodekeep-manifest \
#     -s REPO/NODE/EPOCH/manifest.json.sig < REPO/NODE/EPOCH/manifest.json
# Every byte used is then checked against it: the artifact and the piece list by the SHA-256 in the
# manifest, the decrypted page map or index by its content_sha256 (a whole file: its size; age authenticates
# it), every piece by its sealed SHA-256 in
# the map, a SQLite file by the SHA-256 in the map, a file by its SHA-256 in the index.
# Layouts (docs/incremental.md): whole (one sealed file), sqlite pages (page map + packs),
# files index (rocksdb pieces and files trees: index + packs/objects).
set -euo pipefail
umask 077

die() { echo "restore-by-hand: $*" >&2; exit 1; }
[ $# -eq 6 ] || die "usage: $0 REPO NODE EPOCH ASSET IDENTITY OUT"
repo=$1 node=$2 epoch=$3 asset=$4 identity=$5 out=$6
dir="$repo/$node/$epoch"
manifest="$dir/manifest.json"
if [ ! -f "$manifest" ] || [ ! -f "$dir/manifest.json.sig" ]; then die "$dir has no signed manifest (an incomplete epoch)"; fi
[ -e "$out" ] && die "$out exists: give a new path"
for tool in age zstd jq sha256sum dd; do command -v "$tool" >/dev/null || die "$tool is missing"; done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# check FILE SIZE SHA256: the file's size and SHA-256 are the recorded ones
check() {
  [ "$(stat -c %s "$1")" = "$2" ] || die "$1: size differs from the record ($2)"
  echo "$3  $1" | sha256sum -c --quiet - >/dev/null 2>&1 || die "$1: SHA-256 differs from the record"
}
# open SEALED OUT: decrypt and decompress a sealed file
open_sealed() { age -d -i "$identity" "$1" | zstd -d -q -c >"$2"; }

art=$(jq -c --arg a "$asset" '.artifacts[] | select(.name == $a)' "$manifest")
[ -n "$art" ] || die "epoch $epoch has no asset $asset"
file=$(jq -r .file <<<"$art")
case $file in */* | .* | "") die "unsafe artifact file name $file" ;; esac
check "$dir/$file" "$(jq -r .size <<<"$art")" "$(jq -r .sha256 <<<"$art")"
layout=$(jq -r '.source.layout // "whole"' <<<"$art")
atype=$(jq -r .asset_type <<<"$art")
plain="$work/artifact"
open_sealed "$dir/$file" "$plain"
# The plaintext's size always; its SHA-256 only where an older epoch recorded one (newer ones record
# none, docs/safety.md: the sealed file's SHA-256 above pins the bytes and age authenticates them).
[ "$(stat -c %s "$plain")" = "$(jq -r .content_size <<<"$art")" ] || die "$plain: size differs from the record"
content_sha256=$(jq -r '.content_sha256 // empty' <<<"$art")
[ -z "$content_sha256" ] || check "$plain" "$(jq -r .content_size <<<"$art")" "$content_sha256"

objects="$repo/$node/objects"
# piece NAME SEALED_SIZE SEALED_SHA OUT: a checked piece, decrypted
piece() {
  case $1 in *[!0-9a-f]*) die "bad piece name $1" ;; esac
  [ ${#1} -eq 64 ] || die "bad piece name $1"
  check "$objects/${1:0:2}/$1" "$2" "$3"
  open_sealed "$objects/${1:0:2}/$1" "$4"
}

if [ "$layout" = whole ]; then
  case $atype in
    sqlite | config | secret) cp "$plain" "$out" ;;
    *) mkdir -p "$out" && tar -C "$out" -xf "$plain" ;;
  esac
  echo "restored $asset of $epoch into $out"
  exit 0
fi

if [ "$atype" = sqlite ]; then
  # The page map: a header, one line per pack (in order), one line per run of pages.
  header=$(head -n 1 "$plain")
  [ "$(jq -r .format <<<"$header")" = "nodekeep.sqlite-pages/v1" ] || die "unknown page map format"
  ps=$(jq -r .page_size <<<"$header")
  : >"$out.part"
  truncate -s "$(jq -r .size <<<"$header")" "$out.part"
  jq -r 'select(.object) | "\(.object) \(.sealed_size) \(.sealed_sha256)"' <(tail -n +2 "$plain") >"$work/packs"
  number=0
  while read -r name size sha; do
    piece "$name" "$size" "$sha" "$work/pack"
    jq -r --argjson n "$number" 'select(.pack == $n) | "\(.first) \(.count) \(.offset)"' <(tail -n +2 "$plain") |
      while read -r first count offset; do
        dd if="$work/pack" of="$out.part" bs="$ps" skip=$((offset / ps)) seek=$((first - 1)) count="$count" \
          conv=notrunc status=none
      done
    number=$((number + 1))
  done <"$work/packs"
  echo "$(jq -r .sha256 <<<"$header")  $out.part" | sha256sum -c --quiet - >/dev/null 2>&1 ||
    die "the rebuilt database does not match the page map's SHA-256"
  mv "$out.part" "$out"
  echo "restored $asset of $epoch into $out (SHA-256 checked)"
  exit 0
fi

# A files index (rocksdb pieces, files trees): JSON lines, a header then one entry per path.
tail -n +2 "$plain" | jq -e -r '.path' | while read -r path; do
  case "/$path/" in */../* | *//*) [ "$path" = . ] || die "unsafe path $path in the index" ;; esac
done
mkdir "$out"
# attrs TARGET UID GID MTIME_NS [MODE]: owner (as root, or to yourself), mode, then mtime; never through a link
noted="$work/not-kept"
: >"$noted"
attrs() {
  chown -h "$2:$3" "$1" 2>/dev/null || echo "owner $2:$3 of $1" >>"$noted"
  [ -z "${5:-}" ] || chmod "$(printf '%o' "$5")" "$1"
  if [ "$4" -ge 0 ] 2>/dev/null; then
    touch -h -d "@$(($4 / 1000000000)).$(printf '%09d' $(($4 % 1000000000)))" "$1" 2>/dev/null ||
      echo "mtime of $1" >>"$noted"
  fi
}
# mtime_ns read from the line itself: jq would round a nanosecond time to a double
mtime_of() { sed -n 's/.*"mtime_ns": *\([0-9][0-9]*\).*/\1/p' <<<"$1"; }
: >"$work/dirs"
tail -n +2 "$plain" | while IFS= read -r entry; do
  path=$(jq -r .path <<<"$entry")
  target="$out/$path"
  read -r type uid gid mode <<<"$(jq -r '"\(.type) \(.uid // -1) \(.gid // -1) \(.mode // 0)"' <<<"$entry")"
  mtime=$(mtime_of "$entry")
  mtime=${mtime:--1}
  case $type in
    dir) mkdir -p "$target" && echo "$uid $gid $mtime $mode $path" >>"$work/dirs" ;;
    symlink) ln -s "$(jq -r .target <<<"$entry")" "$target" ;;
    hardlink) ln "$out/$(jq -r .link <<<"$entry")" "$target" ;;
    file)
      read -r name size sha offset length content <<<"$(jq -r '"\(.object) \(.sealed_size) \(.sealed_sha256) \(.offset // -1) \(.size) \(.sha256)"' <<<"$entry")"
      piece "$name" "$size" "$sha" "$work/object"
      if [ "$offset" = -1 ]; then
        cp "$work/object" "$target"
      else
        dd if="$work/object" of="$target" bs=1M iflag=skip_bytes,count_bytes skip="$offset" count="$length" \
          status=none
      fi
      echo "$content  $target" | sha256sum -c --quiet - >/dev/null 2>&1 || die "$path does not match its SHA-256"
      ;;
    *) continue ;;
  esac
  # a file: owner, mode, mtime now; a link: its own owner and mtime; a hard link shares its file's
  case $type in
    file) attrs "$target" "$uid" "$gid" "$mtime" "$mode" ;;
    symlink) attrs "$target" "$uid" "$gid" "$mtime" ;;
  esac
done
# directories last (a read-only directory must not stop its own restore, and writing into a directory
# changes its mtime), deepest first
sort -r -k 5 "$work/dirs" | while read -r uid gid mtime mode path; do attrs "$out/$path" "$uid" "$gid" "$mtime" "$mode"; done
if [ -s "$noted" ]; then
  echo "restore-by-hand: not kept (run as root to keep owners): $(wc -l <"$noted") item(s), e.g. $(head -n 1 "$noted")" >&2
fi
echo "restored $asset of $epoch into $out (every file's SHA-256 checked; owners, modes and mtimes set)"
