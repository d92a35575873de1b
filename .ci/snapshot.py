"""Copy the working tree as git sees it (tracked and untracked files, not the ignored ones)
into DEST, so that a wheel built there holds what the checkout holds and nothing stale from
its build/ or *.egg-info. Used by .ci/wheel.sh and .ci/lab_e2e.sh.

    python .ci/snapshot.py REPO DEST [--skip PREFIX ...] [--also PATH ...]

--skip leaves out files under a prefix (e.g. e2e/); --also copies an ignored directory too
(e.g. jobber_lab/labextension, a bundle built already).
"""

import argparse
import os
import shutil
import subprocess

parser = argparse.ArgumentParser()
parser.add_argument("repo")
parser.add_argument("dest")
parser.add_argument("--skip", action="append", default=[])
parser.add_argument("--also", action="append", default=[])
args = parser.parse_args()
names = subprocess.run(["git", "-C", args.repo, "ls-files", "-z", "-co", "--exclude-standard"],
                       capture_output=True, check=True).stdout.split(b"\0")
for name in filter(None, map(os.fsdecode, names)):
    src = os.path.join(args.repo, name)
    # A tracked file deleted in the working tree is not copied.
    if os.path.isfile(src) and not name.startswith(tuple(args.skip)):
        os.makedirs(os.path.dirname(os.path.join(args.dest, name)), exist_ok=True)
        shutil.copy2(src, os.path.join(args.dest, name), follow_symlinks=False)
for path in args.also:
    shutil.copytree(os.path.join(args.repo, path), os.path.join(args.dest, path))
