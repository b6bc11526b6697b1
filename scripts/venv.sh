#!/usr/bin/env bash
# Source this file, then: ensure_venv VENV_DIR REQUIREMENTS_FILE
# Creates the Python venv when missing and installs REQUIREMENTS_FILE into it, again only when that
# file's sha256 changed since the last install (repeated runs stay offline and fast).
ensure_venv() {
  local venv=$1 req=$2 want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req"
    echo "$want" > "$venv/.requirements.sha256"
  fi
}
