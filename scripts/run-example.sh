#!/usr/bin/env bash
# README "Run a real job": trains an MLP on Fashion-MNIST with 6 workers, one of which lies in
# every step, and shows that the parameter server decodes the exact gradient and names the liar.
# Extra arguments go to `draco run` (e.g. --run-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=/usr/share/datasets/fashion-mnist
if [ ! -f "$DATA/train-images-idx3-ubyte.gz" ]; then
  echo "Fashion-MNIST is missing: installing the Debian package dataset-fashion-mnist"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist
fi
# Build exactly what the test command builds (the whole workspace, all targets, dev profile with
# optimized dependencies): building only the `draco` package would unify dependency features
# differently and compile burn a second time.
cargo build --workspace --all-targets --locked
exec "${CARGO_TARGET_DIR:-target}/debug/draco" run -f manifests/examples/fashion-mnist.yaml "$@"
