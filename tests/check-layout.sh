#!/bin/sh
# Fails when the README's code map and src/ disagree (a source file the
# map does not name, or a name in the map with no file), or when a
# database client library's header is included outside its one driver
# file.  Usage: check-layout.sh, from the top of the tree.
#
# The map, up to the next heading, names a directory ("  src/store/")
# and then its files, indented further ("    store.c"); several may
# share a line, separated by commas.
set -eu
export LC_ALL=C
status=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

awk '
/^Code map$/ { inmap = 1; next }
!inmap { next }
/^---/ { if (++dashes > 1) exit; next }
/^  src\/[a-z]+\/ / { dir = $1; next }
/^  [^ ]/ { dir = ""; next }
/^    [a-z_]+\.[ch][ ,]/ && dir != "" {
	for (i = 1; i <= NF; i++) {
		name = $i
		sub(/,$/, "", name)
		if (name !~ /^[a-z_]+\.[ch]$/)
			break
		print dir name
	}
}' README | sort -u > "$tmp/mapped"
# A header goes with its .c; one without a .c must be named itself.
for f in src/*.c src/*.h src/*/*.c src/*/*.h; do
	[ -e "$f" ] || continue
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
for rule in sybdb.h:src/store/tds.c sybfront.h:src/store/tds.c \
    libpq-fe.h:src/store/store_pgsql.c sqlite3.h:src/store/store_sqlite.c; do
	h=${rule%%:*}
	grep -l "^#include <$h>" src/*/*.c src/*/*.h | while read -r f; do
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
