#!/usr/bin/env python3
"""The 512x512 fast-model figures of `latent-studio bench` against OpenVINO, FastSD CPU's engine.

The same networks as `benches/peer_torch.py` builds (diffusers' SD 1.5 UNet and VAE, SD 2.1 UNet,
TAESD), converted by `openvino.convert_model` and compiled for the CPU twice: with
`INFERENCE_PRECISION_HINT` f32, and with OpenVINO's default (bf16 on processors with AVX512-BF16 or
AMX, f32 elsewhere). Random weights (OpenVINO has paths for sparse weights, which zeros would
trigger); ours and PyTorch's run zeros, which their dense kernels time the same. Prints one JSON
object per figure and precision with ours, OpenVINO's and the ratio ours/theirs.

    /tmp/peer/bin/pip install openvino
    cargo build --release
    /tmp/peer/bin/python benches/peer_openvino.py --threads 2

Not part of CI: converting the UNets takes minutes and about 10 GB of memory.
"""

import argparse
import json
import pathlib
import subprocess
import sys

import openvino as ov
import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from peer_torch import SD15_VAE, SD21_UNET, median_ms, ours  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent


class Call(torch.nn.Module):
    """A module calling `fn` on its inputs, so a diffusers model's method traces as a graph."""

    def __init__(self, owner, fn):
        super().__init__()
        self.owner, self.fn = owner, fn

    def forward(self, *args):
        return self.fn(*args)


def compiled(core, model, threads, precision):
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    net = core.compile_model(model, "CPU", config)
    request = net.create_infer_request()
    return lambda *xs: request.infer([x.numpy() if isinstance(x, torch.Tensor) else x for x in xs])[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default=str(REPO / "target" / "release" / "latent-studio"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    core = ov.Core()
    t = torch.full((1,), 500.0)
    latent = torch.randn(1, 4, 64, 64)
    ctx15, ctx21 = torch.randn(1, 77, 768), torch.randn(1, 77, 1024)
    picture = torch.rand(1, 3, 512, 512) * 2 - 1
    sd15 = UNet2DConditionModel(cross_attention_dim=768).eval()
    sd21 = UNet2DConditionModel(**SD21_UNET).eval()
    vae = AutoencoderKL.from_config(SD15_VAE).eval()
    taesd = AutoencoderTiny().eval()
    mine = ours(args.bin, args.threads, args.repeat, "_512")
    nets = {
        "sd15": (Call(sd15, lambda x, s, c: sd15(x, s, encoder_hidden_states=c).sample), [latent, t, ctx15]),
        "sd21": (Call(sd21, lambda x, s, c: sd21(x, s, encoder_hidden_states=c).sample), [latent, t, ctx21]),
        "vae_decode": (Call(vae, lambda z: vae.decode(z).sample), [latent]),
        "taesd_encode": (Call(taesd, lambda x: taesd.encode(x).latents), [picture]),
        "taesd_decode": (Call(taesd, lambda z: taesd.decode(z).sample), [latent]),
    }
    with torch.no_grad():
        converted = {name: ov.convert_model(m, example_input=tuple(xs)) for name, (m, xs) in nets.items()}
    for precision in ("f32", None):
        run = {name: compiled(core, model, args.threads, precision) for name, model in converted.items()}
        t_np = t.numpy()

        def lcm_lora_render():
            x = latent.numpy()
            for _ in range(4):
                x = run["sd15"](x, t_np, ctx15)
            return run["vae_decode"](x)

        def turbo_frame():
            z = run["taesd_encode"](picture)
            x = run["sd21"](z, t_np, ctx21)
            return run["taesd_decode"](x)

        figures = [
            ("sd15_unet_eval_512", lambda: run["sd15"](latent, t_np, ctx15), args.repeat),
            ("lcm_lora_render_512", lcm_lora_render, min(args.repeat, 2)),
            ("turbo_sdedit_frame_512", turbo_frame, args.repeat),
        ]
        label = precision or "default (" + str(core.get_property("CPU", "INFERENCE_PRECISION_HINT")) + ")"
        for name, fn, repeat in figures:
            theirs = median_ms(fn, repeat)
            value = mine[name]["value"]
            line = {"name": name, "ours": value, "theirs": theirs, "unit": "ms", "ratio": value / theirs,
                    "threads": args.threads, "note": f"ratio = ours / OpenVINO {ov.__version__} {label}"}
            print(json.dumps(line), flush=True)
            print(f"{name:24} ours {value:10.1f} ms   OpenVINO {label:14} {theirs:10.1f} ms   ratio {line['ratio']:.2f}",
                  file=sys.stderr)
        del run


if __name__ == "__main__":
    main()
