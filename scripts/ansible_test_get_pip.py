"""Offline stand-in for get-pip.py, for ansible-test's virtual environments.

ansible-test makes its venvs without pip and bootstraps pip with get-pip.py from
ci-files.testing.ansible.com, which this machine cannot reach (only PyPI and the
Debian mirror). It first looks for the script in ~/.ansible/test/cache/get_pip_X_Y.py
("can be manually downloaded and saved to" that path, says its error message).
scripts/bootstrap.sh copies this file there, next to pip's own wheel from PyPI
(pip-X.Y-py3-none-any.whl), and this file does what get-pip.py does: run pip from
that wheel to install the requested packages (pip==X.Y) into the running Python.
"""

from __future__ import annotations

import glob
import os
import sys

# get-pip.py's own options; everything else is passed on to `pip install`.
GET_PIP_ONLY_OPTIONS = {"--no-setuptools", "--no-wheel"}


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    version = os.path.splitext(os.path.basename(__file__))[0][len("get_pip_") :].replace("_", ".")
    wheels = glob.glob(os.path.join(here, f"pip-{version}-*.whl"))
    if not wheels:
        sys.stderr.write(f"pip {version} wheel missing in {here}: run scripts/bootstrap.sh\n")
        return 1
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
    sys.path.insert(0, wheels[0])
    # pip is importable only now, from the wheel just put on sys.path.
    from pip._internal.cli.main import main as pip_main

    return pip_main(["install", "--upgrade", "--force-reinstall", "--no-index", "--find-links", here, *args])


if __name__ == "__main__":
    sys.exit(main())
