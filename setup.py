"""The one thing pyproject.toml cannot say: build the JupyterLab extension into the wheel.

The Jobs panel (``labextension/``, TypeScript) ships prebuilt, so that installing the wheel
needs no Node.js. Building the wheel or sdist-to-wheel from a clean clone builds it here,
from the locked npm set (``jlpm install --immutable``, JupyterLab's own yarn, from the
``jupyter-builder`` build requirement), into ``jobber_lab/labextension/``, then installs it
as data files under ``share/jupyter/labextensions/jobber-lab/`` with the server extension's
enable file. ``make labextension`` does the same for a checkout (and skips it when up to
date); an editable install leaves it to make, which links the build into the venv.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "labextension"
BUNDLE = HERE / "jobber_lab" / "labextension"
SHARE = "share/jupyter/labextensions/jobber-lab"
SERVER_CONFIG = "jupyter-config/jupyter_server_config.d/jobber_lab.json"


def build_labextension() -> None:
    """Build the extension from labextension/yarn.lock, unless it is built already."""
    if (BUNDLE / "package.json").is_file():
        return
    if shutil.which("node") is None:
        sys.exit("jobber: building the wheel from source builds its JupyterLab extension, which needs "
                 "Node.js (>= 20.19): install it (e.g. apt install nodejs), or install jobber from a "
                 "built wheel, which needs no Node.js")
    jlpm = [sys.executable, "-c", "from jupyter_builder.jlpm import main; main()"]
    subprocess.run([*jlpm, "install", "--immutable"], cwd=SOURCE, check=True)
    subprocess.run([*jlpm, "build"], cwd=SOURCE, check=True)


def labextension_data_files() -> list[tuple[str, list[str]]]:
    """The built extension and the server extension's enable file, as setuptools data files."""
    files: dict[str, list[str]] = {}
    for path in sorted(BUNDLE.rglob("*")):
        if path.is_file():
            dest = Path(SHARE, path.parent.relative_to(BUNDLE)).as_posix()
            files.setdefault(dest, []).append(path.relative_to(HERE).as_posix())
    if files:
        files[SHARE].append("labextension/install.json")
    files["etc/jupyter/jupyter_server_config.d"] = [SERVER_CONFIG]
    return list(files.items())


class BuildPyWithLabextension(build_py):
    """build_py, after building the extension and adding it to the data files."""

    def run(self) -> None:
        if self.editable_mode:  # make links the checkout's build into the venv (no copies)
            self.distribution.data_files = []
        else:
            build_labextension()
            if not (BUNDLE / "package.json").is_file():
                sys.exit(f"jobber: the JupyterLab extension was not built into {BUNDLE}")
            self.distribution.data_files = labextension_data_files()
        super().run()


if __name__ == "__main__":
    os.chdir(HERE)  # data file paths are relative to the project
    setup(cmdclass={"build_py": BuildPyWithLabextension}, data_files=labextension_data_files())
