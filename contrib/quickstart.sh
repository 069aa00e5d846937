#!/bin/sh
# From a fresh clone on Debian 12: install the build dependencies (when
# run as root), build, and run the demo.
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then
	sh contrib/install-deps.sh
elif command -v sudo >/dev/null 2>&1; then
	sudo sh contrib/install-deps.sh
fi
[ -f config.mk ] || { autoconf && ./configure --with-python=/usr/bin/python3; }
make
make demo
