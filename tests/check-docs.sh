#!/bin/sh
# Fails when a key of the configuration table is missing from its section
# of the manual page or of the sample configuration, when either of them
# has a key in a section where the table has none of that name, or when a
# manual page has warnings.  Usage: check-docs.sh BUILD_DIR
set -eu
b=$1
status=0
tab=$(printf '\t')
export LC_ALL=C
"$b/ade-ctl" config keys > "$b/keys.tsv"
cut -f 1,2 "$b/keys.tsv" | sort > "$b/keys.table"

# Section and name of each key documented: in the manual page, the
# ".It Cm name" items under ".Ss \&[section]"; in the sample, the
# "#name =" lines under "[section]".
awk -v OFS="$tab" '
/^\.S[hs] / { section = "" }
/^\.Ss \\&\[[a-z0-9_]+\]$/ { section = substr($2, 4, length($2) - 4) }
/^\.It Cm [a-z0-9_]+$/ && section != "" { print section, $3 }
' man/ade-worker.conf.5 | sort > "$b/keys.man"
awk -v OFS="$tab" '
/^\[[a-z0-9_]+\]$/ { section = substr($0, 2, length($0) - 2) }
/^#?[a-z0-9_]+ =/ { name = $1; sub(/^#/, "", name); print section, name }
' etc/worker.conf | sort > "$b/keys.sample"

for doc in man/ade-worker.conf.5:man etc/worker.conf:sample; do
	file=${doc%:*}
	found=$b/keys.${doc#*:}
	out=$({
		comm -23 "$b/keys.table" "$found" | awk -F "$tab" -v f="$file" \
		    '{ print f ": key [" $1 "] " $2 " is missing" }'
		comm -13 "$b/keys.table" "$found" | awk -F "$tab" -v f="$file" \
		    '{ print f ": [" $1 "] " $2 " is not a key" }'
	})
	if [ -n "$out" ]; then
		echo "$out"
		status=1
	fi
done
for page in man/*.[0-9]; do
	if command -v mandoc >/dev/null 2>&1; then
		out=$(mandoc -Tlint -Wwarning "$page" 2>&1) || true
	else
		out=$(groff -mandoc -ww -z "$page" 2>&1) || true
	fi
	if [ -n "$out" ]; then
		echo "$out"
		status=1
	fi
done
[ $status = 0 ] && echo "docs: $(wc -l < "$b/keys.tsv") keys documented, manual pages clean"
exit $status
