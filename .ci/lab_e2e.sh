#!/usr/bin/env bash
# The Jobs panel (issue 24) as a user gets it: build the wheel, install it with [notebook] at
# the locked versions in a fresh venv outside the checkout, and drive two JupyterLabs started
# FROM THAT VENV (tenant A and tenant B, one jobs directory) with headless Chromium
# (Playwright, e2e/lab/). Exits non-zero on any failure.
#
# Screenshots, lab-junit.xml, traces of failures and both servers' logs go to artifacts/e2e/.
#
#   .ci/lab_e2e.sh                 every spec of e2e/lab/
#   .ci/lab_e2e.sh --grep Stop     arguments go on to Playwright (see e2e/lab/run_lab.py)
#
# The wheel is built from a snapshot of the working tree (tracked and untracked files, not
# ignored ones) plus the prebuilt labextension bundle (jobber_lab/labextension/, git-ignored,
# made by make), so nothing stale in the checkout's build/ reaches the wheel.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
started=$SECONDS
python=$repo/.venv/bin/python
work=$(mktemp -d /tmp/jobber-lab-wheel.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "lab_e2e.sh: FAIL: $*" >&2; exit 1; }
step() { echo "== $* ($((SECONDS - started)) s)"; }

if [ ! -x /usr/bin/chromium ]; then
  echo "lab_e2e: installing Debian's chromium"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null
fi
[ -f .venv/.installed ] || make venv
if ! cmp -s e2e/package-lock.json e2e/node_modules/.installed-from-lock 2>/dev/null; then
  echo "lab_e2e: npm ci (e2e/package-lock.json)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix e2e --no-audit --no-fund --loglevel=error
  cp e2e/package-lock.json e2e/node_modules/.installed-from-lock
fi

step "the labextension bundle (make labextension), a snapshot of the tree, pip wheel"
make -s labextension  # from labextension/yarn.lock; nothing to do when the bundle is up to date
[ -f jobber_lab/labextension/package.json ] || fail "make labextension made no jobber_lab/labextension/package.json"
mkdir "$work/src" "$work/dist"
"$python" "$repo/.ci/snapshot.py" "$repo" "$work/src" --skip e2e/ --also jobber_lab/labextension
(cd "$work/src" && PIP_CONSTRAINT="$repo/requirements/build.txt" "$python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$work/dist" .)
wheels=("$work"/dist/jobber-*.whl)
[ "${#wheels[@]}" = 1 ] && [ -f "${wheels[0]}" ] || fail "expected one wheel, found: ${wheels[*]}"
echo "built $(basename "${wheels[0]}")"

step "a fresh venv in $work/venv: the wheel with [notebook], and jupyterlab, at the locked versions"
"$python" -m venv --without-pip "$work/venv"  # uv installs into it: no pip needed
# uv (pinned in the lock, from .venv) installs from its cache in seconds; pip would take a minute.
.venv/bin/uv pip install -q --python "$work/venv/bin/python" -c requirements/lock.txt "${wheels[0]}[notebook]" jupyterlab
"$work/venv/bin/jupyter" labextension list 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | grep -E '^\s+jobber-lab v[0-9.]+ enabled\s+OK' \
  || fail "jupyter labextension list in the fresh venv does not show jobber-lab enabled OK: $("$work/venv/bin/jupyter" labextension list 2>&1)"
"$work/venv/bin/jupyter" server extension list 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | grep -E '^\s+jobber_lab enabled' \
  || fail "jupyter server extension list in the fresh venv does not show jobber_lab enabled: $("$work/venv/bin/jupyter" server extension list 2>&1)"

step "the specs (e2e/lab/run_lab.py, with the fresh venv's Python)"
status=0
# run_lab.py bounds itself (Playwright's global timeout); this is the backstop.
(cd / && unset PYTHONPATH PYTHONHOME && timeout --kill-after=30 540 "$work/venv/bin/python" "$repo/e2e/lab/run_lab.py" "$@") || status=$?
echo "lab_e2e: exit $status after $((SECONDS - started)) s; artifacts in artifacts/e2e/"
exit "$status"
