#!/bin/sh
# make demo: a SQLite database and a data directory under demo/, a few
# sample runs (one of them fails and is retried until its attempts are
# used), ade-superd until the queue is drained, then the results and a
# one-line summary.  It fails when the runs did not end as expected.
set -eu
top=$(pwd)
demo=$top/demo
B=$top/build
PYTHON=${PYTHON:-/usr/bin/python3}

rm -rf "$demo"
mkdir -p "$demo"
data=$demo/data
service=
# ade-superd never runs workers as root.  Run as root, the demo runs the
# service as "nobody", with its data inside the checkout when nobody can
# reach it there, else in /var/tmp (demo/data then points there).
if [ "$(id -u)" = 0 ]; then
	service="user = nobody
group = nogroup"
	if ! runuser -u nobody -- test -x "$demo"; then
		data=/var/tmp/ade-demo-data
		rm -rf "$data"
		ln -s "$data" "$demo/data"
		echo "note: nobody cannot reach $demo; the data directory is $data"
	fi
fi
# The engine is installed editable from a copy, so that pip's egg-info
# lands in the data directory and not in the checkout.
mkdir -p "$data"
cp -R "$top/contrib/ade_engine" "$data/engine-src"
rm -rf "$data/engine-src/src/"*.egg-info
[ "$(id -u)" = 0 ] && chown -R nobody:nogroup "$data"
cat > "$demo/worker.conf" <<CONF
# Written by make demo.
[database]
backend = sqlite

[worker]
data_dir = $data
engine_spec = $data/engine-src
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

[supervisor]
workers = 2
$service

[http]
# /health, /ready, /metrics and the dashboard (/) while the demo runs.
listen = 127.0.0.1:9187
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
"$B/ade-superd" -c "$demo/worker.conf" -f -d --exit-when-idle &
superd=$!
# A long step (pip installing the engine) says how far it is, as
# "ade-ctl status" does, instead of leaving a silent wait.
while sleep 3 && kill -0 "$superd" 2>/dev/null; do
	ctl status 2>/dev/null | sed -n \
	    's/^\([0-9][0-9]*\) .* \([0-9a-f-]\{36\}\) (\([^)]*\))$/progress: worker \1, \2: \3/p' ||
	    true
done
wait "$superd"

echo
echo "== runs"
ctl runs list
for id in $(ctl --json runs list | sed -n 's/.*"id": "\([^"]*\)".*/\1/p'); do
	echo
	echo "== run $id"
	ctl runs show "$id"
done

# "1 run", "2 runs".
count() {
	if [ "$1" = 1 ]; then echo "1 $2"; else echo "$1 ${2}s"; fi
}
succeeded=0 failed=0 other=0
for status in $(ctl --json runs list |
    sed -n 's/.*"status": "\([^"]*\)".*/\1/p'); do
	case $status in
	succeeded)	succeeded=$((succeeded + 1)) ;;
	failed)		failed=$((failed + 1)) ;;
	*)		other=$((other + 1)) ;;
	esac
done
summary="$(count "$succeeded" run) succeeded, $failed failed"
[ "$other" = 0 ] || summary="$summary, $other not finished"
echo
# Every sample but broken.csv succeeds.
if [ "$succeeded" != 4 ] || [ "$failed" != 1 ] || [ "$other" != 0 ]; then
	echo "demo: $summary; expected 4 succeeded and 1 failed (broken.csv)"
	exit 1
fi
echo "demo: $summary (broken.csv, on purpose); output in" \
    "demo/data/workspaces/*/runs/*/output/, database demo/data/db/ade.sqlite"
