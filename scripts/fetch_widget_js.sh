#!/usr/bin/env bash
# Fetch, verify and unpack the JavaScript that renders ipywidgets in the static book, so that the built HTML
# loads it from its own _static/ and never from a CDN. Run once by `make book` (needs the npm registry);
# the unpacked files are kept (git-ignored), so later builds work offline. See book/_static_widgets/README.md.
set -euo pipefail
dir="$(cd "$(dirname "$0")/../book/_static_widgets" && pwd)"
command -v npm >/dev/null || { echo "npm is needed once to fetch the widget JavaScript: apt-get install npm" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# `npm pack` downloads just these two packages' tarballs: no dependency tree, no install scripts.
(cd "$tmp" && npm pack --silent @jupyter-widgets/html-manager@1.0.6 requirejs@2.3.4 >/dev/null)
(cd "$tmp" && sha256sum --quiet -c "$dir/SHA256SUMS")  # the exact bytes this book was checked with
rm -rf "$dir/js" "$dir/extra"
# The widget CSS asks for its icon fonts under the folder of the page (the chapters with widgets are in
# notebooks/), at two places: @jupyter-widgets/ and @jupyter-widgets/html-manager/dist/ (AMD module paths).
fonts="$dir/extra/notebooks/@jupyter-widgets"
mkdir -p "$dir/js" "$fonts/html-manager/dist"
tar -xzf "$tmp/jupyter-widgets-html-manager-1.0.6.tgz" -C "$tmp" package/dist package/LICENSE
tar -xzf "$tmp/requirejs-2.3.4.tgz" -C "$tmp" --transform 's,^package,requirejs,' package/require.js
cp "$tmp/package/dist/embed-amd.js" "$tmp/requirejs/require.js" "$dir/js/"
cp "$tmp/package/LICENSE" "$dir/js/html-manager-LICENSE.txt"
cp "$tmp/package/dist/embed.js.LICENSE.txt" "$dir/js/html-manager-third-party-LICENSES.txt"
cp "$tmp"/package/dist/*.woff2 "$fonts/"
cp "$tmp"/package/dist/*.woff2 "$fonts/html-manager/dist/"
echo "widget JavaScript ready in $dir/js"
