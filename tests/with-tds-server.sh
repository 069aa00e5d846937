#!/bin/sh
# Runs a command (make check, make bench) with a TDS server named in
# ADE_TEST_MSSQL_*, so that the SQL Server cases run too.
#
#   sh tests/with-tds-server.sh make check
#
# When ADE_TEST_MSSQL_HOST is already set, that server is used as it is.
# Otherwise, when a Babelfish for PostgreSQL is installed ($ADE_TEST_BABELFISH,
# or /opt/babelfish), a throw-away one is started for the command and
# stopped after it, however the command ends.  With neither, the command
# runs as it is and the SQL Server cases are reported as skipped.
set -u
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}

if [ -n "${ADE_TEST_MSSQL_HOST:-}" ]; then
	exec "$@"
fi
if ! "$python" "$here/lib/tdsserver.py" available /; then
	echo "with-tds-server: no Babelfish installed (set ADE_TEST_BABELFISH);" \
	    "the SQL Server cases will be skipped" >&2
	exec "$@"
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/ade-tds.XXXXXX") || exit 1
stop() {
	"$python" "$here/lib/tdsserver.py" stop "$dir" >&2
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if ! env=$("$python" "$here/lib/tdsserver.py" start "$dir"); then
	echo "with-tds-server: cannot start Babelfish; see $dir/server.log" >&2
	exit 1
fi
eval "$env"
echo "with-tds-server: Babelfish at $ADE_TEST_MSSQL_HOST:$ADE_TEST_MSSQL_PORT" >&2
"$@"
