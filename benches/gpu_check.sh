#!/usr/bin/env bash
# The GPU check, in under five minutes on a machine with an NVIDIA GPU, from the stripped binary
# packaging/check-cuda.sh builds (target/cuda/latent-studio-cuda; nothing is compiled there).
# Prints JSON lines:
# - device_parity_max / _mean: the built-in model, its live student, the tiny diffusers fixture
#   and a single-file checkpoint rendered on the GPU (f16) against the same renders on the CPU
#   (f32, fused kernels), as 8-bit pixel differences;
# - timings with random weights on the GPU: SD 1.5's UNet at 512², the built-in 20-step render,
#   the live frame; then PyTorch's on the same GPU (benches/peer_torch.py) where torch is there.
# Reads: the binary (or its .xz), assets/builtin, assets/builtin-live,
# tests/fixtures/tiny_sd/model and tests/fixtures/single_file/tiny_sd1.safetensors. The device
# tool carries at most 64 MiB of working tree and carried files, and this repository's tree is
# larger (the training folders): run it from a sparse checkout of what the check reads,
#   git clone --no-checkout --filter=blob:none . /tmp/slim && cd /tmp/slim &&
#   git sparse-checkout set --no-cone '/*' '!/training/' '!/docs/' '!/tests/fixtures/' \
#       '/tests/fixtures/tiny_sd/model/' '/tests/fixtures/single_file/tiny_sd1.safetensors' &&
#   git checkout && mkdir -p target/cuda && cp ../main/target/cuda/latent-studio-cuda.xz target/cuda/
# (about 45 MiB), carrying target/cuda/latent-studio-cuda.xz.
set -uo pipefail
cd "$(dirname "$0")/.."

bin=${LATENT_STUDIO:-target/cuda/latent-studio-cuda}
device=${DEVICE:-cuda:0}
if [ ! -x "$bin" ] && [ -f "$bin.xz" ]; then
    xz -d -k "$bin.xz" && chmod +x "$bin"
fi
[ -x "$bin" ] || { echo "error: $bin is missing: build it with packaging/check-cuda.sh" >&2; exit 1; }

# The binary links cudart, cuBLAS, cuRAND and NVRTC of CUDA 13: from the system, else from
# Python's NVIDIA wheels (PyTorch brings them).
# (grep reads all of ldconfig's list: `grep -q` would stop it early, a failure under pipefail.)
if ! ldconfig -p 2>/dev/null | grep 'libcublas.so.13' >/dev/null; then
    for dir in $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null) /usr/local/cuda/lib64; do
        for lib in "$dir"/nvidia/cu13/lib "$dir"/nvidia/*/lib "$dir"; do
            [ -e "$lib/libcublas.so.13" ] && export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        done
    done
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$bin" --version

status=0
"$bin" --device "$device" bench --only device_parity \
    --parity-model tests/fixtures/tiny_sd/model \
    --parity-model tests/fixtures/single_file/tiny_sd1.safetensors || status=1
for figure in sd15_unet_eval_512 builtin_render live_frame; do
    "$bin" --device "$device" bench --random-weights --repeat 10 --only "$figure" || status=1
done
# A render too large for the GPU must be an error naming the size, not a crash.
said=$("$bin" --device "$device" render --model tests/fixtures/tiny_sd/model --prompt "a cat" --steps 1 \
    --width 16384 --height 16384 -o /tmp/too-large.png 2>&1 | tail -n 1)
if [[ $said == *"ran out of memory rendering 16384x16384"* ]]; then
    echo '{"name":"gpu_out_of_memory","value":1,"unit":"named","note":"16384x16384 on the tiny model: an error naming the size"}'
else
    echo "gpu_out_of_memory: expected an error naming the size, got: $said" >&2
    status=1
fi

if python3 -c 'import torch, diffusers; assert torch.cuda.is_available()' 2>/dev/null; then
    python3 benches/peer_torch.py --device cuda --half --random-weights --bin "$bin" --rounds 2 \
        --only sd15_unet_eval_512 || status=1
    python3 benches/peer_torch.py --device cuda --half --random-weights --bin "$bin" --rounds 2 \
        --only builtin_render || status=1
    python3 benches/peer_torch.py --device cuda --half --random-weights --bin "$bin" --rounds 2 \
        --only live_frame || status=1
else
    echo '{"name":"peer_torch","note":"PyTorch with CUDA is not installed here: no peer figures"}'
fi
exit $status
