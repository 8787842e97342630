# Shared by the device scripts (sourced): a file rebuilt from its carried parts is checked before it lands where
# seerflex.assets trusts any file it finds.
reassemble() {  # DEST SHA256 PART...: a mismatch removes the copy and stops the script
  local dest=$1 sha=$2
  shift 2
  cat "$@" > "$dest.tmp"
  if ! echo "$sha  $dest.tmp" | sha256sum -c; then rm -f "$dest.tmp"; exit 1; fi
  mv "$dest.tmp" "$dest"
}

send_back() {  # SRC NAME: a run folder (without its checkpoint) back through $OUT as 15 MiB tar parts + sha256 (a file
  # over 16 MiB stays behind); locally: restore_parts <the call's files_at> NAME DEST
  tar cf /tmp/$2.tar --exclude=./checkpoint -C "$1" .
  split -b 15m -d /tmp/$2.tar "$OUT/$2.tar."
  sha256sum /tmp/$2.tar | cut -d' ' -f1 > "$OUT/$2.sha256"
  rm /tmp/$2.tar
}

restore_parts() {  # FROM NAME DEST: FROM/NAME.tar.NN checked against FROM/NAME.sha256, unpacked into DEST
  local from=$1 name=$2 dest=$3
  mkdir -p "$dest"
  reassemble "$dest.tar" "$(cat "$from/$name.sha256")" "$from/$name".tar.*
  tar xf "$dest.tar" -C "$dest" && rm "$dest.tar"
}
