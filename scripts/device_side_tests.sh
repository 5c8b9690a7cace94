#!/usr/bin/env bash
# The device side's tests (agent, uploads, run, bench, hardening, fuzz: `pytest -m device_side`) on the
# interpreters boards ship, each from a base install (`pip install '.[run-onnx]'`, no torch) into a venv made
# with that interpreter, as the README's device path does. The bundles they need are packed first with the
# full install (.venv, from scripts/setup.sh).
#
#   scripts/device_side_tests.sh                       # Debian 12's /usr/bin/python3 (3.11.2, as Raspberry Pi OS
#                                                      # bookworm) + the floor and ceiling Pythons where pyenv has them
#   DEVICE_PYTHONS="/usr/bin/python3" scripts/device_side_tests.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=build/device-side
PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}
if [ -z "${DEVICE_PYTHONS:-}" ]; then
  [ -x /usr/bin/python3 ] || { echo "device_side_tests: /usr/bin/python3 (the system Python boards ship) not found" >&2; exit 2; }
  DEVICE_PYTHONS=/usr/bin/python3
  for v in 3.10 3.13; do  # requires-python's floor and its newest minor, where this machine has them
    py=$(ls -d "$PYENV_ROOT"/versions/$v.*/bin/python 2>/dev/null | sort -V | tail -1 || true)
    if [ -n "$py" ]; then DEVICE_PYTHONS="$DEVICE_PYTHONS $py"; else echo "device_side_tests: no Python $v under $PYENV_ROOT; not run there"; fi
  done
fi
mkdir -p "$WORK"
rm -rf build/lib build/bdist.*  # setuptools' staging: a module deleted from the tree must not reach the wheel
fixtures=$(cd "$WORK" && pwd)/fixtures
rm -rf "$fixtures"  # packed afresh by this checkout's packer: a bundle of older code would test the wrong thing
.venv/bin/python tests/conftest.py "$fixtures" > "$WORK/fixtures.log" 2>&1 || { tail -20 "$WORK/fixtures.log"; exit 1; }
status=0
for py in $DEVICE_PYTHONS; do
  version=$("$py" -c 'import platform; print(platform.python_version())')
  venv=$WORK/venv-$version
  echo "=== device side on Python $version ($py): base install + run-onnx, pytest -m device_side"
  "$py" -m venv --clear "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip > "$WORK/pip-$version.log" 2>&1
  # non-editable, as on a board: the tests import the installed package
  "$venv/bin/python" -m pip install -q --disable-pip-version-check '.[run-onnx,test-device]' >> "$WORK/pip-$version.log" 2>&1 \
    || { grep -v '^WARNING: Location' "$WORK/pip-$version.log" | tail -20; exit 1; }
  if "$venv/bin/python" -c 'import torch' 2>/dev/null; then echo "torch is installed in $venv: not a base install" >&2; exit 1; fi
  EDGEPACK_TEST_FIXTURES=$fixtures "$venv/bin/pytest" -q -p no:cacheprovider -m device_side || status=1
done
exit $status
