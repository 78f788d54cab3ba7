#!/usr/bin/env bash
# The package as a user gets it: build the wheel and the sdist, install the wheel (not the
# checkout) into a clean virtual environment, and run one test with it from a folder outside
# the repository, so nothing of the checkout can be imported by accident.
#   usage: scripts/check-package.sh            (PYTHON=python3.x to choose the interpreter)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# shellcheck source=scripts/pip-quiet.sh
source "$root/scripts/pip-quiet.sh"

"$python" -m venv "$work/build-env"
pip_quiet "$work/build-env/bin/python" -m pip install -q build
"$work/build-env/bin/python" -m build --sdist --wheel --outdir "$work/dist" "$root" >/dev/null
wheel=("$work"/dist/pytest_omni_perf-*.whl)
sdist=("$work"/dist/pytest_omni_perf-*.tar.gz)
tar -tzf "${sdist[0]}" > "$work/sdist-files.txt"  # (grep -q on a pipe: SIGPIPE under pipefail)
grep -q "pytest_omni_perf/profiles.toml" "$work/sdist-files.txt"
# Every subpackage of the checkout is in the wheel (pytest_omni_perf.cases once was not).
"$python" - "${wheel[0]}" "$root" <<'PY'
import pathlib, sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
root = pathlib.Path(sys.argv[2])
missing = [str(p.relative_to(root)) for p in sorted(root.glob("pytest_omni_perf/**/__init__.py"))
           if str(p.relative_to(root)) not in names]
if missing:
    sys.exit(f"check-package: the wheel lacks {', '.join(missing)}")
PY

"$python" -m venv "$work/venv"
pip_quiet "$work/venv/bin/python" -m pip install -q "${wheel[0]}"
mkdir "$work/user"
cat > "$work/user/test_installed.py" <<'PY'
import pytest_omni_perf


def test_the_wheel_is_what_runs(omni_profile):
    assert "site-packages" in pytest_omni_perf.__file__
    assert omni_profile.name == "eager"
PY
(cd "$work/user" && "$work/venv/bin/python" -m pytest -p no:cacheprovider -q test_installed.py)
echo "check-package: $(basename "${wheel[0]}") and $(basename "${sdist[0]}") build; the wheel installs and runs"
