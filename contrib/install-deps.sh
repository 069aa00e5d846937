#!/bin/sh
# Installs the Debian 12 packages that building ade-superd, its demo and
# its test suite need.  Run as root.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
	build-essential autoconf pkg-config \
	libev-dev freetds-dev libarchive-dev libjansson-dev libsqlite3-dev \
	libpq-dev uuid-dev libssl-dev libcmocka-dev \
	python3 python3-venv python3-pip python3-setuptools python3-wheel \
	python3-pytest python3-jsonschema python3-psycopg2 python3-pymssql \
	postgresql mandoc groff-base sqlite3 >/dev/null
