#!/usr/bin/env bash
# The main job in one command: install (first time), then `genrestream run`.
#   scripts/run.sh                         the demo: ../shared music clips, at playback speed
#   scripts/run.sh SOURCE... [OPTIONS]     any arguments of `genrestream run`
# Dashboard: http://127.0.0.1:8765/   Events: ws://127.0.0.1:8765/ws
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ "$#" -eq 0 ]; then
  shared=${GENRESTREAM_SHARED:-../shared}
  set -- "$shared"/audio/free/{jazz_kevin_macleod_vibe_ace,metal_el_senator_chaos_god,classical_brahms_hungarian_dance_5,country_karissa_hobbs_lets_go_fishin}.ogg --realtime
  echo "genrestream: demo on four clips from $shared/audio/free; open http://127.0.0.1:8765/" >&2
fi
exec .venv/bin/genrestream run "$@"
