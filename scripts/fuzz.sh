#!/usr/bin/env bash
# Runs every Fuzz* target of the module for the given time each.
#
#	scripts/fuzz.sh [FUZZTIME]    FUZZTIME: a go test -fuzztime value, default 20s
#
# Go fuzzes one target of one package per `go test` run, so the targets are
# listed first (`go test -list '^Fuzz' ./...`) and then run one by one.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

fuzztime="${1:-20s}"

# `go test -list` prints a package's matching names, then its "ok <pkg>"
# line (or "? <pkg> [no test files]").
listing="$(go test -list '^Fuzz' ./...)"
targets=()
names=()
while IFS= read -r line; do
	case "$line" in
	Fuzz*) names+=("$line") ;;
	ok*)
		pkg="$(awk '{print $2}' <<<"$line")"
		for n in "${names[@]}"; do targets+=("$pkg $n"); done
		names=()
		;;
	*) names=() ;;
	esac
done <<<"$listing"

if [ "${#targets[@]}" -eq 0 ]; then
	echo "no fuzz targets"
	exit 0
fi

failed=()
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	printf -- '--- %s %s (%s)\n' "$pkg" "$name" "$fuzztime"
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"; then
		failed+=("$pkg $name")
	fi
done
if [ "${#failed[@]}" -gt 0 ]; then
	printf 'fuzz target failed: %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzzed ${#targets[@]} targets for $fuzztime each"
