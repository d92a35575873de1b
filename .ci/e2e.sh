#!/usr/bin/env bash
# The notebook experience in a real browser: JupyterLab with a demo pool on loopback,
# headless Chromium driven by Playwright through the quickstart notebook and a long job
# (live log, status, charts, Stop, close and reopen). Exits non-zero on any failure.
#
# Installs what it needs first: Debian's chromium (Playwright downloads no browser: that
# fails on a closed network) and e2e/node_modules from e2e/package-lock.json. Screenshots,
# the JUnit report, traces of failures and the server log go to artifacts/e2e/.
#
#   .ci/e2e.sh                    all the tests
#   .ci/e2e.sh --grep Stop        arguments go on to Playwright (see e2e/run.py --help)
#   E2E_DEMO=1 .ci/e2e.sh         also `make demo` from a fresh clone (e2e/make_demo_check.sh)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
started=$SECONDS

if [ ! -x /usr/bin/chromium ]; then
  echo "e2e: installing Debian's chromium"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null | head -1

# The project's venv (what `make venv` makes), unless it is there already.
[ -f .venv/.installed ] || make venv

# npm ci (which starts from an empty node_modules) when the lock file changed since.
if ! cmp -s e2e/package-lock.json e2e/node_modules/.installed-from-lock 2>/dev/null; then
  echo "e2e: npm ci (e2e/package-lock.json)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix e2e --no-audit --no-fund --loglevel=error
  cp e2e/package-lock.json e2e/node_modules/.installed-from-lock
fi

status=0
# e2e/run.py bounds itself (Playwright's global timeout); this is the backstop.
timeout --kill-after=30 1080 .venv/bin/python e2e/run.py "$@" || status=$?
if [ "$status" = 0 ] && [ "${E2E_DEMO:-0}" = 1 ]; then
  timeout --kill-after=30 600 e2e/make_demo_check.sh || status=$?
fi
echo "e2e: exit $status after $((SECONDS - started)) s; artifacts in artifacts/e2e/"
exit "$status"
