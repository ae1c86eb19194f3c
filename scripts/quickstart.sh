#!/usr/bin/env bash
# Fresh machine -> a trained model and an MP4: venv, install, train experiment=quickstart, generate.
# Sized for 2 CPU cores (about 10 minutes in all, install included); a GPU needs a minute or two.
# Extra arguments are Hydra overrides for the training run, e.g. scripts/quickstart.sh trainer.device=cuda
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_venv.sh av
RUN_DIR="outputs/quickstart/$(date +%Y-%m-%d_%H-%M-%S)"
"$VENV/bin/vidgan" train experiment=quickstart hydra.run.dir="$RUN_DIR" "$@"
"$VENV/bin/vidgan" generate ckpt="$RUN_DIR/checkpoints/last.ckpt" condition=circle num_videos=4 \
    out_dir="$RUN_DIR/generated"
echo
echo "Samples during training: $RUN_DIR/samples/   (grid: one row per class)"
echo "Generated circles:       $RUN_DIR/generated/circle_000.mp4 ... and grid.mp4"
