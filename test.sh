#!/usr/bin/env bash
# The test command (README.md; `.ci/run` calls it too): installs what the tests need when it
# is missing and this runs as root with apt-get, then runs every test of the workspace.
# A test whose tool or server is still missing fails with the line that installs it.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)         # promtool + the server
[ -x /usr/bin/prometheus-alertmanager ] || missing+=(prometheus-alertmanager)  # alerts e2e
command -v victoria-metrics >/dev/null 2>&1 || missing+=(victoria-metrics)  # remote_write e2e
[ -x /usr/sbin/clickhouse-server ] || missing+=(clickhouse-server)   # traces shipped to ClickHouse
command -v chromium >/dev/null 2>&1 || missing+=(chromium)           # the live view's browser tests
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver) # WebDriver for chromium
command -v tshark >/dev/null 2>&1 || missing+=(tshark)               # reads back packet captures
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)     # verifies deploy/'s units
command -v fincore >/dev/null 2>&1 || missing+=(util-linux-extra)     # page-cache residency (drop-behind)
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || missing+=(libseccomp2)  # the unit's filter
python3 -c 'import prometheus_client.openmetrics.parser' >/dev/null 2>&1 || need_pip=1

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "test.sh: missing Debian packages: ${missing[*]} (as root: apt-get install ${missing[*]})" >&2
    fi
fi
if [ "${need_pip:-0}" = 1 ]; then
    # Python's prometheus_client: its strict OpenMetrics parser checks tracerd's output.
    python3 -m pip install -q prometheus-client \
        || echo "test.sh: cannot install prometheus-client (pip install prometheus-client)" >&2
fi

exec cargo test --workspace --locked "$@"
