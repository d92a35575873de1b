"""Print the lines of requirements/lock.txt that pin the dev extra's own packages.

`make test-oldest` installs the lowest version of each runtime dependency that pyproject.toml
allows; the test tools (pytest, nbval, jupyterlab, ...) stay at their locked versions, so a
failure there is about jobber's lower bounds, not about an old pytest.

    python .ci/dev_pins.py pyproject.toml requirements/lock.txt > dev-pins.txt
"""

import re
import sys

try:
    import tomllib
except ImportError:  # Python 3.10: the locked venv has tomli (pytest needs it there)
    import tomli as tomllib


def canonical(name):
    """The name as PEP 503 compares it: case, '-', '_' and '.' do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def main(pyproject, lock):
    with open(pyproject, "rb") as f:
        dev = tomllib.load(f)["project"]["optional-dependencies"]["dev"]
    wanted = {canonical(re.match(r"[A-Za-z0-9_.-]+", req).group(0)) for req in dev}
    with open(lock) as f:
        pins = [line.strip() for line in f if re.match(r"[A-Za-z0-9]", line)]
    chosen = [pin for pin in pins if canonical(pin.split("==")[0]) in wanted]
    found = {canonical(pin.split("==")[0]) for pin in chosen}
    if found != wanted:
        sys.exit(f"dev_pins: {lock} pins none of {sorted(wanted - found)}: run make lock")
    print("\n".join(chosen))


if __name__ == "__main__":
    main(*sys.argv[1:])
