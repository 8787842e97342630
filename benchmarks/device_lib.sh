# Shared by the device scripts (sourced): a file rebuilt from its carried parts is checked before it lands where
# seerflex.assets trusts any file it finds.
reassemble() {  # DEST SHA256 PART...: a mismatch removes the copy and stops the script
  local dest=$1 sha=$2
  shift 2
  cat "$@" > "$dest.tmp"
  if ! echo "$sha  $dest.tmp" | sha256sum -c; then rm -f "$dest.tmp"; exit 1; fi
  mv "$dest.tmp" "$dest"
}
