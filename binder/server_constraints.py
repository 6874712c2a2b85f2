"""Writes binder/server-constraints.txt from repo2docker's conda lock of its Jupyter server env.

On Binder the kernel runs in the server's own env (repo2docker installs binder/requirements.txt
there with pip), so the lock must keep every package the server env already has at the version
repo2docker put there. This turns the Python packages of repo2docker's lock
(repo2docker/buildpacks/conda/environment.py-3.11-linux-64.lock) into pip constraints:

    python binder/server_constraints.py < environment.py-3.11-linux-64.lock > binder/server-constraints.txt

Then regenerate binder/requirements.txt with the command at its top (see binder/README.md).
"""

from __future__ import annotations

import re
import sys

# conda-forge names whose PyPI name differs; packages that are not Python packages are skipped
# (their conda build string does not start with "py").
PYPI_NAME = {
    "brotli-python": "brotli",
    "jupyterhub-base": "jupyterhub",
    "nbconvert-core": "nbconvert",
    "python-fastjsonschema": "fastjsonschema",
}
# Left free, with the reason: dp-accounting requires attrs<24, while repo2docker has attrs 25; the
# server env's users of attrs (jsonschema, referencing) need only attrs>=22.2 (`pip check` agrees,
# see binder/README.md).
# pip, setuptools and wheel are build tools, not part of the kernel lock.
FREE = {"attrs", "pip", "setuptools", "wheel"}

LINE = re.compile(r"https://\S+/(?:noarch|linux-64)/(?P<name>.+)-(?P<version>[^-]+)-(?P<build>[^-]+)\.(?:conda|tar\.bz2)#")


def main() -> None:
    pins = {}
    source = ""
    for line in sys.stdin:
        if line.startswith("# Frozen on") or line.startswith("# Generated on"):
            source = line[2:].strip()
        m = LINE.match(line.strip())
        if not m or not m["build"].startswith("py"):
            continue
        name = m["name"].lower().replace("_", "-")
        name = PYPI_NAME.get(name, name)
        if name not in FREE:
            pins[name] = m["version"]
    print("# The Python packages repo2docker installs in its Jupyter server env (Python 3.11, linux-64),")
    print("# from its repo2docker/buildpacks/conda/environment.py-3.11-linux-64.lock" + (f" ({source})." if source else "."))
    print("# Used as constraints when locking binder/requirements.txt; written by binder/server_constraints.py.")
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")


if __name__ == "__main__":
    main()
