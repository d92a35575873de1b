#!/usr/bin/env bash
# `make demo` as a new user meets it: a fresh clone, a fresh venv (made by make), a fresh
# HOME (so ~/.jobber-demo is made anew); then the JupyterLab it starts must serve the
# quickstart notebook. Stops the whole process group afterwards and checks that nothing
# of it is left running.
#
#   e2e/make_demo_check.sh              clone the committed HEAD (what a new user gets)
#   e2e/make_demo_check.sh --worktree   copy the working tree instead (tracked and untracked
#                                       files, not ignored ones): check before committing
#   KEEP=1 e2e/make_demo_check.sh       keep the temporary directory
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source_kind=clone
[ "${1:-}" = "--worktree" ] && source_kind=worktree
started=$SECONDS
tmp=$(mktemp -d /tmp/jobber-demo-check.XXXXXX)
marker=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
pid=""

leftovers() {
  # Processes (other than this shell's) whose environment carries this run's marker.
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    { tr '\0' '\n' < "$p/environ"; } 2>/dev/null | grep -qx "JOBBER_DEMO_CHECK=$marker" && echo "${p#/proc/}"
  done
  return 0
}

cleanup() {
  local status=$? left
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || true   # make, jupyter lab, its kernels if any
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  sleep 0.5
  left=$(leftovers)
  if [ -n "$left" ]; then
    echo "make-demo: processes left running: $(echo $left)"; ps -o pid,args -p $(echo $left | tr ' ' ,) || true
    kill -KILL $left 2>/dev/null || true
    status=1
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "make-demo: kept $tmp"; else rm -rf "$tmp"; fi
  echo "make-demo: $([ "$status" = 0 ] && echo ok || echo FAILED) after $((SECONDS - started)) s"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$source_kind" = clone ]; then
  git clone -q "$repo" "$tmp/jobber"
  echo "make-demo: cloned $(git -C "$tmp/jobber" log -1 --format='%h %s')"
else
  mkdir "$tmp/jobber"
  (cd "$repo" && git ls-files -z -co --exclude-standard \
     | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$tmp/jobber"
  echo "make-demo: copied the working tree of $repo"
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$tmp/home"
# A new user: nothing in HOME (no ~/.jobber-demo, no Jupyter settings, no pip cache).
# PYENV_ROOT stays: the pyenv shims find Python through it, not through HOME.
# An outer make (make test) must not pass its flags and variables on to this one.
setsid env -u JOBBER_ROOT -u JOBBER_CERT -u JUPYTER_CONFIG_DIR -u JUPYTER_DATA_DIR \
  -u JUPYTER_RUNTIME_DIR -u IPYTHONDIR -u VIRTUAL_ENV -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
  HOME="$tmp/home" JOBBER_JOBS_DIR="$tmp/jobs" JOBBER_DEMO_CHECK="$marker" \
  make -C "$tmp/jobber" demo PORT="$port" </dev/null >"$tmp/demo.log" 2>&1 &
pid=$!
echo "make-demo: make demo PORT=$port (pid $pid), log in $tmp/demo.log"

# The venv install takes a minute or two; then JupyterLab prints its URL with the token.
url=""
for _ in $(seq 1500); do
  kill -0 "$pid" 2>/dev/null || { echo "make-demo: make demo ended early:"; tail -30 "$tmp/demo.log"; exit 1; }
  url=$(grep -o "http://127\.0\.0\.1:$port/[^ ]*token=[0-9a-f]*" "$tmp/demo.log" | head -1 || true)
  [ -n "$url" ] && break
  sleep 0.4
done
[ -n "$url" ] || { echo "make-demo: no URL printed within 10 min:"; tail -30 "$tmp/demo.log"; exit 1; }
echo "make-demo: JupyterLab printed $url"
case "$url" in
  */lab/tree/notebooks/01-quickstart.ipynb\?*) echo "make-demo: the printed URL opens the quickstart notebook: ok" ;;
  *) echo "make-demo: note: the printed URL opens JupyterLab, not the quickstart notebook" ;;
esac
token=${url##*token=}
base="http://127.0.0.1:$port"

check() {  # check WHAT URL [PATTERN]: HTTP 200 (and PATTERN in the body)
  local body code
  body=$(curl -sS --max-time 20 -H "Authorization: token $token" -w '\n%{http_code}' "$2") || { echo "make-demo: $1: no answer"; return 1; }
  code=${body##*$'\n'}; body=${body%$'\n'*}
  if [ "$code" != 200 ] || { [ -n "${3:-}" ] && ! grep -q -- "$3" <<<"$body"; }; then
    echo "make-demo: $1: HTTP $code"; head -c 300 <<<"$body"; echo; return 1
  fi
  echo "make-demo: $1: ok"
}
check "the contents API has the quickstart notebook" \
  "$base/api/contents/notebooks/01-quickstart.ipynb?content=1" '"%%jobber_run'
check "JupyterLab serves /lab/tree/notebooks/01-quickstart.ipynb" \
  "$base/lab/tree/notebooks/01-quickstart.ipynb?token=$token" 'jupyter-config-data'
check "the page loads the ipywidgets extension" \
  "$base/lab/tree/notebooks/01-quickstart.ipynb?token=$token" '@jupyter-widgets/jupyterlab-manager'
[ -f "$tmp/home/.jobber-demo/client.pem" ] && echo "make-demo: ~/.jobber-demo/client.pem was made: ok" \
  || { echo "make-demo: ~/.jobber-demo/client.pem was not made"; exit 1; }
check "the page loads anywidget (the live view's extension)" \
  "$base/lab/tree/notebooks/01-quickstart.ipynb?token=$token" 'anywidget'
# The README's terminal section, verbatim, as a person pastes it into another terminal.
awk '/^## From a terminal/ {f = 1} f && /^```sh$/ {g = 1; next} g && /^```$/ {exit} g' \
  "$tmp/jobber/README.md" > "$tmp/terminal.sh"
if (cd "$tmp/jobber" && env -u JOBBER_ROOT -u JOBBER_CERT -u VIRTUAL_ENV HOME="$tmp/home" \
      JOBBER_JOBS_DIR="$tmp/jobs" JOBBER_DEMO_CHECK="$marker" bash -e "$tmp/terminal.sh") >"$tmp/terminal.log" 2>&1; then
  echo "make-demo: the README's terminal section ran verbatim: ok"
else
  echo "make-demo: the README's terminal section failed:"; tail -20 "$tmp/terminal.log"; exit 1
fi
