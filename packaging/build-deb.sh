#!/bin/sh
# Builds target/debian/kasip-agent_<version>_<arch>.deb: release binaries (the kiosk
# with camera support when libclang-dev is installed), then cargo-deb (cargo install
# cargo-deb) with the metadata in agent/Cargo.toml.
set -eu
cd "$(dirname "$0")/.."
if dpkg -s libclang-dev >/dev/null 2>&1; then
    cargo build --release -p kasip-agent -p kasip-registry -p kasip-kiosk --features kasip-kiosk/camera
else
    echo "libclang-dev is not installed: the packaged kasip-kiosk has no camera support" >&2
    cargo build --release -p kasip-agent -p kasip-kiosk -p kasip-registry
fi
cargo deb -p kasip-agent --no-build --output target/debian/
