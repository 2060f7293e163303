#!/usr/bin/env bash
# Virtual environments of the peer tools timed by benchmarks/peers_speed.py. They are
# never dependencies of cellmaps: each lives in its own .venv beside this script.
#   bash benchmarks/peers/setup.sh            # both
#   bash benchmarks/peers/setup.sh stardist   # one
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-python3}"
want="${*:-stardist cellpose}"
for peer in $want; do
  venv="$here/$peer/.venv"
  mkdir -p "$here/$peer"
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  case "$peer" in
    # StarDist 2D on TensorFlow's CPU build
    stardist) "$venv/bin/pip" install -q "stardist==0.9.2" "tensorflow-cpu==2.21.0" ;;
    # Cellpose 3 (the last release with the cyto3 network); torch pinned to the CPU build
    cellpose) "$venv/bin/pip" install -q "torch==2.13.0" "cellpose<4" ;;
    *) echo "unknown peer $peer (stardist, cellpose)" >&2; exit 2 ;;
  esac
  echo "$peer ready: $venv"
done
