#!/usr/bin/env bash
# Compiles the CUDA build (`cargo build --release --features cuda`) on a machine with neither a
# GPU nor a system CUDA toolkit, and strips the binary into target/cuda/latent-studio-cuda for a
# GPU machine (benches/gpu_check.sh runs it there).
#
# What candle's CUDA build needs at build time, and where it comes from here:
# - nvcc (with cicc, the crt and CCCL headers) for candle-kernels' PTX: PyPI's CUDA 13.0 wheels
#   (the series the lent GPU machines' driver runs), installed into a venv under target/;
# - CUDA_ROOT with bin/, include/ and lib64/: a folder of links into those wheels;
# - link libraries under unversioned names: cudart, cublas, cublasLt, curand and nvrtc link to
#   the wheels' libraries; libcuda (the driver) comes with the driver, not the toolkit, and no
#   wheel carries NVIDIA's link stub, so an equivalent is built here: every driver function cudarc
#   binds, empty, with the driver's soname (libcuda.so.1), which the real driver replaces at run
#   time;
# - CUDA_COMPUTE_CAP instead of asking nvidia-smi (default 90: the lent H100/H200).
#
# First run: about 1.2 GiB of wheels, then the build (see the README's GPU section for times);
# later runs reuse both.
set -euo pipefail
cd "$(dirname "$0")/.."

toolkit=${CUDA_TOOLKIT_DIR:-$PWD/target/cuda-toolkit}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
mkdir -p "$toolkit"

if [ ! -x "$toolkit/venv/bin/pip" ]; then
    python3 -m venv "$toolkit/venv"
fi
"$toolkit/venv/bin/pip" install --quiet --disable-pip-version-check \
    "cuda-toolkit[nvcc,nvvm,crt,cccl,cudart,cublas,curand,nvrtc]==13.0.2"
cu=$(ls -d "$toolkit"/venv/lib/python3*/site-packages/nvidia/cu13 | head -n 1)
[ -x "$cu/bin/nvcc" ] || { echo "error: no nvcc in $cu" >&2; exit 1; }

root=$toolkit/root
mkdir -p "$root/lib64"
for part in bin include nvvm; do
    ln -sfn "$cu/$part" "$root/$part"
done
for lib in cudart cublas cublasLt curand nvrtc; do
    found=$(ls "$cu"/lib/lib$lib.so.* | head -n 1)
    ln -sf "$found" "$root/lib64/lib$lib.so"
done

# The driver's link stub, from the names cudarc's driver bindings call.
version=$(grep -A1 '^name = "cudarc"' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p' | head -n 1)
registry=${CARGO_HOME:-$HOME/.cargo}/registry/src
cudarc=$(ls -d "$registry"/*/cudarc-"$version" 2>/dev/null | head -n 1)
if [ -z "$cudarc" ]; then
    cargo fetch --locked
    cudarc=$(ls -d "$registry"/*/cudarc-"$version" | head -n 1)
fi
grep -oE 'pub unsafe fn cu[A-Za-z0-9_]+' "$cudarc/src/driver/sys/mod.rs" | sed 's/pub unsafe fn //' | sort -u |
    sed 's/.*/int &(void) { return 999; }/' >"$toolkit/cuda_stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib64/libcuda.so" "$toolkit/cuda_stub.c"

export CUDA_ROOT=$root CUDA_PATH=$root
export PATH=$root/bin:$PATH
export LD_LIBRARY_PATH=$cu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvcc --version | tail -n 2

start=$(date +%s)
cargo build --release --locked --features cuda --target-dir target/cuda
strip -o target/cuda/latent-studio-cuda target/cuda/release/latent-studio
# Compressed for the device tool, which carries at most 64 MiB (the stripped binary is ~80 MB,
# most of it candle's PTX text; benches/gpu_check.sh unpacks it).
xz -T0 -6 -f -k target/cuda/latent-studio-cuda
echo "CUDA build compiled in $(( $(date +%s) - start )) s: target/cuda/latent-studio-cuda" \
    "($(du -h target/cuda/latent-studio-cuda | cut -f1); $(du -h target/cuda/latent-studio-cuda.xz | cut -f1) as .xz)"
