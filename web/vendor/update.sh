#!/usr/bin/env bash
# Re-vendors the web page's third-party code from npm, pinned by version and by the
# registry's sha512 integrity: marked (the Markdown renderer) and DOMPurify (the HTML
# sanitizer), each its browser build and its LICENSE, into web/vendor/<name>/.
#
#   bash web/vendor/update.sh          write the files (after changing a pin below)
#   bash web/vendor/update.sh --check  re-vendor into a temporary folder and fail if
#                                      anything differs from what is checked in
#
# To upgrade: change the version, run `npm pack --json NAME@VERSION` to read its
# integrity, paste both below, run this script, then the page's browser tests.
# Needs npm and node (it only downloads the two tarballs; nothing is installed or run).
set -euo pipefail

VENDOR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# name version integrity file-in-the-tarball
PINS=(
  "marked 18.2.1 sha512-ii4bxCTCqqwpT86XZWgJNs+ZnAIZksmLGYMViWA7PDIXYIeNo1x6cDdX3JOip9NM/cI6p8z57FxliACboTruMA== lib/marked.umd.js"
  "dompurify 3.4.18 sha512-ofe3wI/uNm68HInABYFJYqQxRw1EaKAjNdrFVKqjUY+UZurvNd2L/HuQe097s/4RivWiZyP6tT7aoT8atjfhwg== dist/purify.min.js"
)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/clawsocket-vendor.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# vendor_into DIR: writes every pinned package's files under DIR/<name>/.
vendor_into() {
  local out="$1" name version integrity file packed got
  for pin in "${PINS[@]}"; do
    read -r name version integrity file <<<"$pin"
    mkdir -p "$WORK/$name" "$out/$name"
    packed="$(cd "$WORK/$name" && npm pack --silent "$name@$version")"
    got="$(node -e 'const data = require("fs").readFileSync(process.argv[1]);
      process.stdout.write("sha512-" + require("crypto").createHash("sha512").update(data).digest("base64"))' \
      "$WORK/$name/$packed")"
    if [ "$got" != "$integrity" ]; then
      echo "update.sh: $name@$version has integrity $got, pinned $integrity" >&2
      exit 1
    fi
    tar -xzf "$WORK/$name/$packed" -C "$WORK/$name"
    cp "$WORK/$name/package/$file" "$out/$name/"
    cp "$WORK/$name/package/LICENSE" "$out/$name/LICENSE"
    echo "$name $version $integrity" >"$out/$name/VERSION"
  done
}

if [ "${1:-}" = "--check" ]; then
  vendor_into "$WORK/fresh"
  for pin in "${PINS[@]}"; do
    read -r name _ <<<"$pin"
    diff -r "$WORK/fresh/$name" "$VENDOR/$name"
  done
  echo "update.sh --check: web/vendor matches the pinned packages"
else
  vendor_into "$VENDOR"
  echo "update.sh: vendored into $VENDOR"
fi
