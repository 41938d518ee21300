#!/usr/bin/env bash
# `make install`: pick a supported Python, (re)create .venv with it, install the pinned stack, the npm packages and
# the Debian tools the tests use. A second run with nothing changed returns at once (the stamp in .venv).
#
# Which Python: $PYTHON when given, else the newest of python3.12, python3.11, python3.10, python3 that runs.
# pyenv installs that are not active answer "command not found" through their shims, so pyenv's own version
# folders are looked at too. A .venv made by another Python than the chosen one is recreated, never reused.
#
# VENV=DIR installs elsewhere than .venv; WHEEL=1 installs tfod-wrap as a regular (non-editable) package, as
# a user without the checkout would (make check-installs); PLAN=1 only prints what it would do.
set -euo pipefail
cd "$(dirname "$0")/.."

SUPPORTED=(3.12 3.11 3.10)
VENV=${VENV:-.venv}
WHEEL=${WHEEL:-}
CONSTRAINTS=constraints.txt
TFOD_PACKAGE=tf-models-research-object-detection==2.8.0.post1
STAMP=$VENV/.installed

say() { printf 'make install: %s\n' "$*" >&2; }

# Prints "X.Y /path/to/python" for an interpreter that runs, nothing otherwise.
probe() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2], sys.executable)' 2>/dev/null || true
}

supported() {
    local version
    for version in "${SUPPORTED[@]}"; do [[ $1 == "$version" ]] && return 0; done
    return 1
}

# pyenv's interpreter for python3.X, when pyenv has that version installed but not active.
from_pyenv() {
    command -v pyenv >/dev/null 2>&1 || return 0
    local version=${1#python}
    [[ $version =~ ^3\.[0-9]+$ ]] || return 0
    ls -d "$(pyenv root)"/versions/"$version".*/bin/python"$version" 2>/dev/null | sort -V | tail -n 1
}

# "X.Y /path" for a name (python3.12, a path), trying pyenv when the name itself does not run.
find_interpreter() {
    local found
    found=$(probe "$1")
    if [[ -z $found ]]; then
        local fallback
        fallback=$(from_pyenv "$1")
        [[ -n $fallback ]] && found=$(probe "$fallback")
    fi
    printf '%s' "$found"
}

no_python() {
    say "$1"
    say "tfod-wrap needs Python 3.10, 3.11 or 3.12 (TensorFlow 2.19 and tensorflowjs 4.22 exist for those). To get one:"
    say "  Debian 12: apt-get install python3.11 python3.11-venv;  Ubuntu 22.04: python3.10-venv;  Ubuntu 24.04: python3.12-venv"
    say "  pyenv: pyenv install 3.12;  uv: uv python install 3.12"
    say "then run: make install PYTHON=python3.12 (or the path of the interpreter)"
    exit 2
}

choose_python() {
    local found
    if [[ -n ${PYTHON:-} ]]; then
        found=$(find_interpreter "$PYTHON")
        [[ -n $found ]] || no_python "PYTHON=$PYTHON does not run"
        supported "${found%% *}" || no_python "PYTHON=$PYTHON is Python ${found%% *}"
        printf '%s' "$found"
        return
    fi
    # No choice given: keep a working .venv of a supported version rather than switching under the user.
    found=$(probe "$VENV/bin/python")
    if [[ -n $found ]] && supported "${found%% *}"; then
        printf '%s' "${found%% *} $(readlink -f "$VENV/bin/python")"
        return
    fi
    local name
    for name in python3.12 python3.11 python3.10 python3; do
        found=$(find_interpreter "$name")
        if [[ -n $found ]] && supported "${found%% *}"; then
            printf '%s' "$found"
            return
        fi
    done
    no_python "no supported Python found on PATH"
}

stamp_of() {
    # What an install depends on: the chosen version and every file that says what to install.
    { echo "$1 ${WHEEL:+wheel}"; cat setup.cfg pyproject.toml "$CONSTRAINTS" tfod_wrap/web/package.json tfod_wrap/web/package-lock.json "$0"; } | sha256sum | cut -d' ' -f1
}

chosen=$(choose_python)
version=${chosen%% *}
interpreter=${chosen#* }
stamp=$(stamp_of "$version")

current=$(probe "$VENV/bin/python")
if [[ -e $VENV && ${current%% *} != "$version" ]]; then
    made_by=${current%% *}
    say "$VENV was made by ${made_by:+Python }${made_by:-a Python that no longer runs}; recreating it with Python $version"
    [[ -n ${PLAN:-} ]] && exit 0
    rm -rf "$VENV"
fi
if [[ -f $STAMP && $(cat "$STAMP") == "$stamp" ]]; then
    [[ -n ${PLAN:-} ]] && say "$VENV is up to date (Python $version)"
    exit 0
fi
if [[ -n ${PLAN:-} ]]; then
    say "would install Python $version ($interpreter) into $VENV"
    exit 0
fi

say "Python $version ($interpreter) -> $VENV"
[[ -x $VENV/bin/python ]] || "$interpreter" -m venv "$VENV"
rm -f "$STAMP"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install --quiet --upgrade "pip>=24"
# Every package pinned in constraints.txt, so two installs of one commit get the same stack.
if [[ -n $WHEEL ]]; then
    "${PIP[@]}" install --quiet -c "$CONSTRAINTS" .
else
    "${PIP[@]}" install --quiet -c "$CONSTRAINTS" -e '.[dev]'
fi
# The TFOD API without its dependencies: its own pins (pyparsing==2.4.7) do not resolve with the stack.
"${PIP[@]}" install --quiet --no-deps -c "$CONSTRAINTS" "$TFOD_PACKAGE" lvis
TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" -c "import tfod_wrap.compat as c; print(c.check_stack())" 2>&1 | grep -v "^W0000\|^E0000\|^WARNING: All log"

# TF.js and playwright-core for the web page, its tests and the Node parity check, in .venv/node_modules.
"$VENV/bin/tfod-wrap" install-web --prefix "$VENV"

# Chromium (headless page tests) and ffmpeg (the fake camera's clip), from Debian.
if ! command -v chromium >/dev/null 2>&1 || ! command -v ffmpeg >/dev/null 2>&1; then
    sudo=()
    [[ $(id -u) != 0 ]] && command -v sudo >/dev/null 2>&1 && sudo=(sudo)
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends chromium ffmpeg
fi
echo "$stamp" > "$STAMP"
say "done: $VENV (Python $version)"
