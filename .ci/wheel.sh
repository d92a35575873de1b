#!/usr/bin/env bash
# jobber as a user installs it (issue 10): build the wheel, install it into a fresh venv
# outside the checkout, check what the install holds, then run `jobber run` and the job
# tests against the installed package, with the checkout nowhere on sys.path.
#
# The wheel is built from a snapshot of the working tree (tracked and untracked files, not
# ignored ones), so a stale build/ or *.egg-info in the checkout can neither leak files into
# the wheel nor hide missing ones, and the build leaves nothing behind in the checkout.
# WHEEL_BUILD_PYTHON: the interpreter that builds the wheel and the venv (default .venv's).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${WHEEL_BUILD_PYTHON:-$repo/.venv/bin/python}
work=$(mktemp -d /tmp/jobber-wheel.XXXXXX)
chmod 755 "$work"  # tests run python as uid 65534 (nobody) against the installed package
started=$SECONDS

# Processes started from the fresh venv or in the temporary directory: none may outlive this.
ours() {  # (the grep that lists them matches itself: only pids still alive afterwards count)
  local file pid
  for file in $(grep -lsF -- "$work" /proc/[0-9]*/cmdline || true); do
    pid=${file#/proc/}
    pid=${pid%/cmdline}
    [ "$pid" != $$ ] && grep -qsF -- "$work" "$file" && echo "$pid"
  done
  return 0
}
cleanup() {
  local status=$? pids
  pids=$(ours)
  if [ -n "$pids" ]; then
    echo "wheel.sh: stopping leftover processes: $pids" >&2
    kill -9 $pids 2>/dev/null || true
  fi
  rm -rf "$work"; echo "cleaned up ($((SECONDS - started)) s)"
  exit "$status"
}
trap cleanup EXIT
fail() { echo "wheel.sh: FAIL: $*" >&2; exit 1; }
step() { echo "== $* ($((SECONDS - started)) s)"; }

step "snapshot of the working tree, then pip wheel"
mkdir "$work/src" "$work/dist" "$work/run" "$work/empty-bin"
"$python" "$repo/.ci/snapshot.py" "$repo" "$work/src"
(cd "$work/src" && PIP_CONSTRAINT="$repo/requirements/build.txt" "$python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$work/dist" .)
wheels=("$work"/dist/jobber-*.whl)
[ "${#wheels[@]}" = 1 ] && [ -f "${wheels[0]}" ] || fail "expected one wheel in dist/, found: ${wheels[*]}"
wheel=${wheels[0]}
echo "built $(basename "$wheel")"

step "the wheel holds every module of the source tree, launcher.c and py.typed"
"$python" - "$wheel" "$work/src" <<'EOF'
import sys, zipfile
from pathlib import Path
wheel, src = Path(sys.argv[1]), Path(sys.argv[2])
names = set(zipfile.ZipFile(wheel).namelist())
# Every module, and every file the code reads beside itself (the views' .js and .css).
expected = {p.relative_to(src).as_posix() for top in ("jobber", "jobber_magics", "jobber_lab")
            for p in (src / top).rglob("*") if p.suffix in (".py", ".js", ".css") and "__pycache__" not in p.parts
            and not p.is_relative_to(src / "jobber_lab/labextension")}  # the build, checked below
expected |= {"jobber/_backends/local/launcher.c", "jobber/py.typed", "jobber_magics/py.typed"}
# The Jobs panel, prebuilt (setup.py built it from labextension/yarn.lock: the snapshot has
# no build), and the server extension's enable file.
data = "jobber-0.1.0.data/data/"
share = data + "share/jupyter/labextensions/jobber-lab/"
expected |= {share + "package.json", share + "install.json", share + "static/style.js",
             share + "schemas/jobber-lab/plugin.json", data + "etc/jupyter/jupyter_server_config.d/jobber_lab.json"}
bundle = [n for n in names if n.startswith(share + "static/") and n.endswith(".js")]
if not any(n.startswith(share + "static/remoteEntry.") for n in bundle):
    sys.exit(f"wheel.sh: FAIL: the wheel's labextension has no remoteEntry.*.js: {bundle}")
# The tab's live view is the cell's: jobber_magics/_jobview.js itself, bundled.
code = "".join(zipfile.ZipFile(wheel).read(n).decode() for n in bundle)
if "jobber-logbox" not in code or "jobber-lab-panel" not in code:
    sys.exit("wheel.sh: FAIL: the labextension bundle lacks the job view (_jobview.js) or the panel")
missing = sorted(expected - names)
extra = sorted(n for n in names if "__pycache__" in n or n.startswith(("tests/", "build/", "jobber_lab/labextension/")))
if not wheel.name.endswith("-py3-none-any.whl"):
    sys.exit(f"wheel.sh: FAIL: not a pure wheel: {wheel.name}")
if missing or extra:
    sys.exit(f"wheel.sh: FAIL: the wheel lacks {missing} and has stray {extra}")
print(f"{len(expected)} files of the source tree and the Jobs panel's build, all in the wheel")
EOF

step "a fresh venv in $work/venv, the wheel with [server] and the test requirements, at the locked versions"
"$python" -m venv "$work/venv"
vpy=$work/venv/bin/python
mapfile -t test_reqs < <("$python" - "$repo/pyproject.toml" <<'EOF'
import re, sys, tomllib
dev = tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["dev"]
wanted = {"pytest", "pytest-timeout", "trustme"}  # what tests/conftest.py and its helpers import
print("\n".join(r for r in dev if re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() in wanted))
EOF
)
[ "${#test_reqs[@]}" = 3 ] || fail "pytest, pytest-timeout and trustme not all in the dev extra: ${test_reqs[*]}"
# At the locked versions (requirements/lock.txt), as every other install of the project.
"$vpy" -m pip install -q --disable-pip-version-check -c "$repo/requirements/lock.txt" "$wheel[server]" "${test_reqs[@]}"

# What tests run with: a directory holding only tests/, no PYTHONPATH, a fresh cache
# (so the first job compiles the installed launcher.c), private jobs.
cp -r "$work/src/tests" "$work/run/tests"
"$python" - "$repo/pyproject.toml" "$work/run/pytest.ini" <<'EOF'
import sys, tomllib
options = tomllib.load(open(sys.argv[1], "rb"))["tool"]["pytest"]["ini_options"]
lines = ["[pytest]"]
for key, value in options.items():
    if key != "testpaths":
        lines.append(f"{key} =" + "".join(f"\n    {v}" for v in value) if isinstance(value, list) else f"{key} = {value}")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
EOF
cd "$work/run"
unset PYTHONPATH PYTHONHOME PYTHONSAFEPATH JOBBER_LAUNCHER CC
export XDG_CACHE_HOME=$work/cache JOBBER_JOBS_DIR=$work/jobs PYTHONDONTWRITEBYTECODE=1

step "jobber is imported from the fresh venv, with launcher.c"
"$vpy" - "$work/venv" "$repo" <<'EOF'
import importlib.util, sys, sysconfig
from pathlib import Path
venv, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
site = Path(sysconfig.get_paths()["purelib"]).resolve()
import jobber
where = Path(jobber.__file__).resolve()
if not (site.is_relative_to(venv) and where == site / "jobber" / "__init__.py"):
    sys.exit(f"wheel.sh: FAIL: jobber imported from {where}, not from {site}")
magics = Path(importlib.util.find_spec("jobber_magics").origin).resolve()
if magics != site / "jobber_magics" / "__init__.py":
    sys.exit(f"wheel.sh: FAIL: jobber_magics found at {magics}, not in {site}")
on_path = [p for p in sys.path if p and Path(p).resolve().is_relative_to(repo)]
if on_path:
    sys.exit(f"wheel.sh: FAIL: the checkout is on sys.path: {on_path}")
for part in ("_backends/local/launcher.c", "_backends/local/supervisor.py", "py.typed"):
    if not (site / "jobber" / part).is_file():
        sys.exit(f"wheel.sh: FAIL: the installed package lacks jobber/{part}")
import jobber._backends.local.launcher_build as launcher, jobber._jobs.store, jobber._server  # noqa: E401
if Path(launcher._SOURCE).resolve() != site / "jobber/_backends/local/launcher.c":
    sys.exit(f"wheel.sh: FAIL: the launcher builds from {launcher._SOURCE}")
print(f"jobber {where.parent}")
EOF

step "import jobber and jobber --help: nothing on stderr, warnings as errors"
err=$("$vpy" -W error -c "import jobber" 2>&1 >/dev/null) || fail "import jobber: $err"
[ -z "$err" ] || fail "import jobber wrote to stderr: $err"
err=$("$work/venv/bin/jobber" --help 2>&1 >/dev/null) || fail "jobber --help: $err"
[ -z "$err" ] || fail "jobber --help wrote to stderr: $err"

step "jobber run --follow -- echo hi, from the venv's bin"
"$work/venv/bin/jobber" certs init-demo "$work/pki" >/dev/null
export JOBBER_ROOT=$work/pki JOBBER_CERT=$work/pki/client.pem
run_hi() {  # run_hi NAME [ENV...]: `jobber run --follow -- echo hi`; stdout must be "hi", exit 0
  local name=$1 rc=0 out
  shift
  out=$(env "$@" "$work/venv/bin/jobber" run --follow -- echo hi 2>"$work/$name.log") || rc=$?
  [ "$rc" = 0 ] && [ "$out" = hi ] || fail "$name: exit $rc, stdout '$out', stderr: $(cat "$work/$name.log")"
  # The CLI's own lines ("job N started", the outcome "jobber: job N exited (code 0)") aside,
  # what is left is what the launcher said.
  grep -vE '^job [0-9]+ started|^jobber: job [0-9]+ ' "$work/$name.log" >"$work/$name.err" || true
}
run_hi compiled
[ ! -s "$work/compiled.err" ] || fail "compiled: unexpected stderr: $(cat "$work/compiled.err")"
ls "$XDG_CACHE_HOME"/jobber/launcher-* >/dev/null 2>&1 || fail "the first job did not build the launcher in $XDG_CACHE_HOME/jobber"
run_hi no-compiler CC="$work/no-such-cc" PATH="$work/empty-bin" XDG_CACHE_HOME="$work/cache-no-cc"
[ "$(wc -l <"$work/no-compiler.err")" = 1 ] && grep -q '^jobber: no C compiler found' "$work/no-compiler.err" \
  || fail "no compiler: expected one line on stderr, got: $(cat "$work/no-compiler.err")"
echo "hi, exit 0 (compiled launcher); hi, exit 0 and one line (no compiler): $(cat "$work/no-compiler.err")"
unset JOBBER_ROOT JOBBER_CERT

step "the job tests against the installed package"
"$work/venv/bin/pytest" -q -p no:cacheprovider -rs --basetemp "$work/tmp" \
  tests/test_launcher.py tests/test_jobs.py tests/test_isolation.py tests/test_storage.py tests/test_cli.py \
  tests/test_limits.py tests/test_exported_members.py tests/test_certificates.py \
  tests/test_client.py tests/test_server.py

step "the Jobs panel as pip installs it: jobber[notebook] and JupyterLab, with no Node.js on PATH"
# PATH holds the venv's bin only: neither the install nor JupyterLab may need node.
PATH=$work/venv/bin "$vpy" -m pip install -q --disable-pip-version-check -c "$repo/requirements/lock.txt" \
  "$wheel[notebook,server]" jupyterlab
! env PATH="$work/venv/bin" /bin/sh -c 'command -v node' >/dev/null || fail "node is on the venv's PATH"
labext=$(PATH=$work/venv/bin "$work/venv/bin/jupyter" labextension list 2>&1) || fail "jupyter labextension list: $labext"
# "jobber-lab v0.1.0 enabled OK (python, jobber)", colours aside
echo "$labext" | sed 's/\x1b\[[0-9;]*m//g' | grep -qE '^\s*jobber-lab v[0-9.]+ enabled +OK \(python, jobber\)' \
  || fail "jupyter labextension list does not show jobber-lab enabled OK (python, jobber): $labext"
serverext=$(PATH=$work/venv/bin "$work/venv/bin/jupyter" server extension list 2>&1) || fail "jupyter server extension list: $serverext"
echo "$serverext" | sed 's/\x1b\[[0-9;]*m//g' | grep -qE '^\s*jobber_lab +enabled' && \
  echo "$serverext" | sed 's/\x1b\[[0-9;]*m//g' | grep -qE '^\s*jobber_lab +OK' \
  || fail "jupyter server extension list does not show jobber_lab enabled and OK: $serverext"
echo "jobber-lab enabled OK (python, jobber); server extension jobber_lab enabled OK"

cd /
for _ in $(seq 50); do [ -z "$(ours)" ] && break; sleep 0.1; done
[ -z "$(ours)" ] || fail "processes left running: $(ours)"
step "wheel OK"
