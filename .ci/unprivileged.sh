#!/usr/bin/env bash
# Run the job tests as an unprivileged user, where no cgroup is writable: the "none"
# backend for real. The venv's interpreter lives under /root (mode 0700), so the user
# runs the system Python 3 with the venv's site-packages on PYTHONPATH instead.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
user=${JOBBER_TEST_USER:-nobody}
site=$("$repo/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
python=/usr/bin/python3  # the pyenv interpreter sits under /root (0700)
if [ "$(id -u)" != 0 ]; then
  echo "unprivileged.sh: already unprivileged (uid $(id -u)); running the suite as is"
  exec "$repo/.venv/bin/python" -m pytest -q -p no:cacheprovider "$repo/tests/test_jobs.py" "$repo/tests/test_isolation.py" \
    "$repo/tests/test_local_backend.py"
fi
work=$(mktemp -d /tmp/jobber-unpriv.XXXXXX)
chown "$user" "$work"
trap 'rm -rf "$work"' EXIT
cd "$work"
setpriv --reuid="$user" --regid="$(id -g "$user")" --clear-groups --reset-env \
  env PATH=/usr/bin:/bin HOME="$work" PYTHONPATH="$repo:$site" PYTHONDONTWRITEBYTECODE=1 \
  "$python" -m pytest -q -rs -p no:cacheprovider --rootdir "$repo" --basetemp "$work/tmp" \
  "$repo/tests/test_jobs.py" "$repo/tests/test_isolation.py" "$repo/tests/test_local_backend.py"
