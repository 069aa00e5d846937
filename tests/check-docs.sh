#!/bin/sh
# Fails when a key of the configuration table is missing from the manual
# page or from the sample configuration, or when a manual page has
# warnings.  Usage: check-docs.sh BUILD_DIR
set -eu
b=$1
status=0
"$b/ade-ctl" config keys > "$b/keys.tsv"
while IFS="$(printf '\t')" read -r section name _; do
	if ! grep -q "^\.It Cm $name\$" man/ade-worker.conf.5; then
		echo "man/ade-worker.conf.5: key [$section] $name is missing"
		status=1
	fi
	if ! grep -q "^#\{0,1\}$name =" etc/worker.conf; then
		echo "etc/worker.conf: key [$section] $name is missing"
		status=1
	fi
done < "$b/keys.tsv"
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
