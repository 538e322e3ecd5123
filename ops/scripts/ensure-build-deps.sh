#!/usr/bin/env bash
# Debian packages that `make install` needs to build the fast paths: libmariadb-dev + pkg-config
# for mysqlclient (migrations read MySQL ~5x faster than through PyMySQL), gcc + the Python headers
# for the migrations' C modules. Installed only when root and missing; prints what it did and never
# fails the install (without them the same work runs in Python, slower, and `make install` says so).
set -u
need=()
for pkg in libmariadb-dev pkg-config gcc python3-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-build-deps: missing ${need[*]} (install them as root for the fast MySQL reader and C modules)" >&2
  exit 0
fi
echo "ensure-build-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || echo "ensure-build-deps: apt-get install ${need[*]} failed; continuing without the fast paths" >&2
exit 0
