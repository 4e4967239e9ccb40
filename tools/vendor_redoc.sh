#!/usr/bin/env bash
# Vendor Redoc's standalone bundle into qdash/hub/assets, so the hub's /docs needs no internet.
# One edit: the footer's logo is fetched from cdn.redoc.ly; the shipped copy shows an empty inline image instead.
set -euo pipefail
VERSION=${1:-2.5.4}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "redoc@$VERSION" >/dev/null && tar xzf "redoc-$VERSION.tgz")
out=$(dirname "$0")/../qdash/hub/assets
sed "s#https://cdn.redoc.ly/redoc/logo-mini.svg#data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E#" \
    "$tmp/package/bundles/redoc.standalone.js" > "$out/redoc.standalone.js"
cp "$tmp/package/bundles/redoc.standalone.js.LICENSE.txt" "$out/"
cp "$tmp/package/LICENSE" "$out/redoc.LICENSE"
! grep -q "https://cdn.redoc.ly" "$out/redoc.standalone.js"
echo "vendored redoc $VERSION into $out"
