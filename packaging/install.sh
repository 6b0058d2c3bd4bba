#!/usr/bin/env bash
# Installs Latent Studio for the current user: the release binary with the built-in model beside
# it (the studio looks for assets/builtin and assets/builtin-live next to its executable), a
# launcher entry and an icon.
# Usage: packaging/install.sh [PREFIX]   (default PREFIX: ~/.local)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${1:-$HOME/.local}"
cargo build --release --locked
app="$prefix/lib/latent-studio"
mkdir -p "$app/assets" "$prefix/bin" "$prefix/share/applications" "$prefix/share/icons/hicolor/64x64/apps"
install -m 755 target/release/latent-studio "$app/latent-studio"
rm -rf "$app/assets/builtin" "$app/assets/builtin-live"
mkdir -p "$app/assets/builtin" "$app/assets/builtin-live"
# The models themselves, without training leftovers; the live student's autoencoder, text
# encoder and tokenizer are links to the built-in model's (cp -P keeps them links).
(cd assets/builtin && cp -r model_index.json latent_studio.json scheduler text_encoder tokenizer unet vae "$app/assets/builtin/")
(cd assets/builtin-live && cp -rP model_index.json latent_studio.json scheduler text_encoder tokenizer unet vae "$app/assets/builtin-live/")
ln -sf "$app/latent-studio" "$prefix/bin/latent-studio"
install -m 644 packaging/latent-studio.desktop "$prefix/share/applications/latent-studio.desktop"
install -m 644 docs/icon.png "$prefix/share/icons/hicolor/64x64/apps/latent-studio.png"
echo "installed: $prefix/bin/latent-studio (model in $app/assets/builtin)"
