#!/bin/sh
# Installs the Debian 12 packages that building ade-superd, its demo and
# its test suite need.  Run as root.  When another package manager runs
# (unattended-upgrades, cloud-init on a new VM), it waits for it to finish,
# up to LOCK_TIMEOUT seconds (600 by default), instead of failing.
set -eu
export DEBIAN_FRONTEND=noninteractive
LOCK_TIMEOUT=${LOCK_TIMEOUT:-600}
apt="apt-get -o DPkg::Lock::Timeout=$LOCK_TIMEOUT"

# apt-get waits for the dpkg lock by itself, but "apt-get update" gives up
# at once on the lock of the package lists: it is tried again until the
# other package manager lets go of it.
update() {
	waited=0
	while ! out=$($apt update -qq 2>&1); do
		case $out in
		*"Could not get lock"*) ;;
		*)	printf '%s\n' "$out" >&2
			return 1 ;;
		esac
		if [ "$waited" -ge "$LOCK_TIMEOUT" ]; then
			printf '%s\n' "$out" >&2
			return 1
		fi
		[ "$waited" = 0 ] &&
		    echo "waiting for another package manager to finish" >&2
		sleep 5
		waited=$((waited + 5))
	done
	[ -z "$out" ] || printf '%s\n' "$out" >&2
}

update
$apt install -y -qq --no-install-recommends \
	build-essential autoconf pkg-config \
	libev-dev freetds-dev libarchive-dev libjansson-dev libsqlite3-dev \
	libpq-dev uuid-dev libssl-dev libcap-dev libmicrohttpd-dev \
	libcmocka-dev \
	python3 python3-venv python3-pip python3-setuptools python3-wheel \
	python3-pytest python3-jsonschema python3-psycopg2 python3-pymssql \
	python3-prometheus-client python3-selenium chromium chromium-driver \
	postgresql mandoc groff-base sqlite3 >/dev/null
