#!/bin/sh
# Fails when the README's code map and src/ disagree (a source file the
# map does not name, or a name in the map with no file), or when a
# database client library's header is included outside its one driver
# file.  Usage: check-layout.sh, from the top of the tree.
set -eu
export LC_ALL=C
status=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The "src/..." names of the map: from its heading to the next one.
awk '
/^Code map$/ { inmap = 1; next }
inmap && /^---/ { next }
inmap && /^[A-Z]/ { exit }
inmap {
	for (i = 1; i <= NF; i++)
		if ($i ~ /^src\//) { sub(/,$/, "", $i); print $i }
}' README | sort -u > "$tmp/mapped"
# A header goes with its .c; one without a .c must be named itself.
for f in src/*.c src/*.h; do
	case $f in
	*.h) [ -f "${f%.h}.c" ] && continue ;;
	esac
	echo "$f"
done | sort -u > "$tmp/files"
comm -23 "$tmp/files" "$tmp/mapped" | while read -r f; do
	echo "README: the code map does not name $f"
done > "$tmp/out"
comm -13 "$tmp/files" "$tmp/mapped" | while read -r f; do
	echo "README: the code map names $f, which does not exist"
done >> "$tmp/out"

# Each client library's headers belong to one driver file.
for rule in sybdb.h:src/tds.c sybfront.h:src/tds.c \
    libpq-fe.h:src/store_pgsql.c sqlite3.h:src/store_sqlite.c; do
	h=${rule%%:*}
	grep -l "^#include <$h>" src/*.c src/*.h | while read -r f; do
		[ "$f" = "${rule#*:}" ] ||
		    echo "$f: includes <$h>, which only ${rule#*:} may"
	done
done >> "$tmp/out"
if [ -s "$tmp/out" ]; then
	cat "$tmp/out"
	status=1
else
	echo "layout: $(wc -l < "$tmp/files") files in the code map," \
	    "client headers in their drivers"
fi
exit $status
