#!/usr/bin/env bash
# Refreshes the built-in price table: a snapshot of LiteLLM's price list,
# taken from the newest litellm release on PyPI (or the one given).
#
#	scripts/refresh-prices.sh [VERSION]
#
# litellm's wheel carries the list as
# litellm/model_prices_and_context_window_backup.json. The script needs
# PyPI only (pip download), writes pricing/snapshot/ (the list, gzipped,
# and snapshot.json: release, date, SHA-256) and runs the pricing tests
# against the new snapshot. Review the diff of prices it prints, commit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

spec="litellm"
if [ -n "${1:-}" ]; then
	spec="litellm==$1"
fi
python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "$spec"
wheel="$(ls "$tmp"/litellm-*.whl)"

"$python" - "$wheel" pricing/snapshot <<'PY'
import gzip, hashlib, json, os, sys, zipfile, datetime

wheel, out = sys.argv[1], sys.argv[2]
member = "litellm/model_prices_and_context_window_backup.json"
with zipfile.ZipFile(wheel) as z:
    data = z.read(member)
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    version = next(l.split(":", 1)[1].strip() for l in z.read(meta).decode().splitlines() if l.startswith("Version:"))
json.loads(data)  # refuse a list that is not JSON before writing anything
os.makedirs(out, exist_ok=True)
# mtime=0: the same list gives the same bytes.
with open(os.path.join(out, "model_prices_and_context_window.json.gz"), "wb") as f:
    with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as g:
        g.write(data)
snap = {
    "package": "litellm",
    "version": version,
    "file": member,
    "taken": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
    "sha256": hashlib.sha256(data).hexdigest(),
}
with open(os.path.join(out, "snapshot.json"), "w") as f:
    json.dump(snap, f, indent=2)
    f.write("\n")
print(f"pricing/snapshot: litellm {version}, {len(data)} bytes, sha256 {snap['sha256'][:12]}")
PY

go test -count=1 ./pricing
git --no-pager diff --stat -- pricing/snapshot || true
