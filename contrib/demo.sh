#!/bin/sh
# make demo: a SQLite database and a data directory under demo/, a few
# sample runs (one of them fails and is retried until its attempts are
# used), ade-superd until the queue is drained, then the results.
set -eu
top=$(pwd)
demo=$top/demo
B=$top/build
PYTHON=${PYTHON:-/usr/bin/python3}

rm -rf "$demo"
mkdir -p "$demo"
cat > "$demo/worker.conf" <<CONF
# Written by make demo.
[database]
backend = sqlite

[worker]
data_dir = $demo/data
engine_spec = $top/contrib/ade_engine
python = $PYTHON
# Build environments without network access: Debian's setuptools is
# used through the system site packages.
venv_args = --system-site-packages
pip_args = --no-index --no-build-isolation
poll_interval = 0.2
poll_interval_max = 1
backoff_base_seconds = 1
backoff_max_seconds = 4
run_timeout = 120
CONF
ctl() { "$B/ade-ctl" -c "$demo/worker.conf" "$@"; }

ctl db init
for sample in contacts people_partial unmapped broken; do
	printf 'enqueued %-16s ' "$sample"
	ctl enqueue --workspace demo --configuration sample \
	    --config-package "$top/contrib/sample-config" \
	    --input "$top/contrib/samples/$sample.csv"
done
printf 'enqueued %-16s ' "dry run"
ctl enqueue --workspace demo --configuration sample \
    --config-package "$top/contrib/sample-config" \
    --input "$top/contrib/samples/contacts.csv" --option dry_run=true

echo
echo "== ade-superd (until the queue is drained)"
"$B/ade-superd" -c "$demo/worker.conf" -f -d --exit-when-idle

echo
echo "== runs"
ctl runs list
for id in $(ctl --json runs list | sed -n 's/.*"id": "\([^"]*\)".*/\1/p'); do
	echo
	echo "== run $id"
	ctl runs show "$id"
done
