#!/usr/bin/env python3
"""Latent Studio's `bench` figures side by side with diffusers + PyTorch on the CPU.

Same thread count, same shapes, the same architectures built from the same config files (the
built-in model's folder, and Stable Diffusion 1.5's UNet/VAE configs with zero weights, as
`latent-studio bench` uses). Runs our benchmark for each figure, then PyTorch's, and prints one
JSON object per figure with both values and the ratio ours/theirs (below 1: we are faster).

    python3 -m venv /tmp/peer && /tmp/peer/bin/pip install torch diffusers transformers
    cargo build --release
    /tmp/peer/bin/python benches/peer_torch.py --threads 2

Not part of CI: it needs PyTorch (about 3 GB of wheels) and a few minutes of a quiet machine.

On a GPU (`benches/gpu_check.sh` runs this): `--device cuda --half --random-weights --bin
target/cuda/latent-studio-cuda` runs both sides there in f16 with random weights, ours with
`--device cuda:0 --random-weights`, each timing synchronised with the device.
"""

import argparse
import inspect
import json
import pathlib
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from diffusers import (AutoencoderKL, AutoencoderTiny, DDIMScheduler, LatentConsistencyModelPipeline, LCMScheduler,
                       UNet2DConditionModel)
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel

REPO = pathlib.Path(__file__).resolve().parent.parent
BUILTIN = REPO / "assets" / "builtin"
LIVE = REPO / "assets" / "builtin-live"
PROMPT = "sunset over snowy mountains with a lake"  # the prompt of our bench's renders
DEVICE = "cpu"  # --device: where PyTorch's side runs (tensors and modules are created there)
RANDOM = False  # --random-weights: keep the modules' random initialisation instead of zeros


def sync():
    """Waits for the device's queued work, so a timing covers it."""
    if DEVICE != "cpu":
        torch.cuda.synchronize(DEVICE)


def generator(seed):
    return torch.Generator(device=DEVICE).manual_seed(seed)


def median_ms(fn, repeat):
    """Median wall time of `repeat` calls after one warm-up call, in milliseconds."""
    fn()
    sync()
    times = []
    for _ in range(max(repeat, 1)):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def read_json(path):
    return json.loads(path.read_text())


def without_nulls(config):
    return {k: v for k, v in config.items() if v is not None}


def zeroed(module):
    """Zero weights, as our bench uses: dense kernels take the same time whatever the values
    (random ones with --random-weights, as on a GPU)."""
    if RANDOM:
        return module.eval()
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module.eval()


class PatchedTiny(torch.nn.Module):
    """diffusers' AutoencoderTiny with our extension: `patch_size` pixel patches folded into
    channels before the encoder and unfolded after the decoder (torch's pixel unshuffle/shuffle,
    the channel order `src/models/tiny_vae.rs` uses), so the same weight file loads."""

    def __init__(self, config):
        super().__init__()
        self.patch = config.get("patch_size", 1)
        # The signature, not `__code__`: diffusers wraps `__init__` in `register_to_config`.
        known = inspect.signature(AutoencoderTiny.__init__).parameters
        tiny = {k: v for k, v in config.items() if k in known}
        tiny["in_channels"] = config["in_channels"] * self.patch**2
        tiny["out_channels"] = config["out_channels"] * self.patch**2
        self.tiny = AutoencoderTiny(**tiny)
        self.latent_channels = config["latent_channels"]

    def load_state_dict(self, weights, strict=True):
        return self.tiny.load_state_dict(weights, strict=strict)

    def encode(self, x):
        return self.tiny.encode(F.pixel_unshuffle(x, self.patch)).latents

    def decode(self, z):
        return F.pixel_shuffle(self.tiny.decode(z).sample, self.patch)


class KL(torch.nn.Module):
    """AutoencoderKL (the 64x64 model's autoencoder) behind the same encode/decode."""

    def __init__(self, config):
        super().__init__()
        levels = len(config["block_out_channels"])
        config = dict(config, down_block_types=["DownEncoderBlock2D"] * levels,
                      up_block_types=["UpDecoderBlock2D"] * levels)
        self.kl = AutoencoderKL.from_config(config)
        self.latent_channels = config["latent_channels"]

    def load_state_dict(self, weights, strict=True):
        return self.kl.load_state_dict(weights, strict=strict)

    def encode(self, x):
        return self.kl.encode(x).latent_dist.mean

    def decode(self, z):
        return self.kl.decode(z).sample


def builtin_vae():
    """The built-in model's autoencoder as its `vae/config.json` names it."""
    config = read_json(BUILTIN / "vae" / "config.json")
    vae = PatchedTiny(config) if config["_class_name"] == "AutoencoderTiny" else KL(config)
    return vae.eval()


def builtin_size():
    return read_json(BUILTIN / "vae" / "config.json")["sample_size"]


def builtin_latent_side():
    """The latent grid's side: pixels over the patch size and one halving per level after the first."""
    config = read_json(BUILTIN / "vae" / "config.json")
    widths = config.get("encoder_block_out_channels") or config["block_out_channels"]
    return builtin_size() // (config.get("patch_size", 1) * 2 ** (len(widths) - 1))


SD15_VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
}


def unet_eval(unet, batch, side, tokens, width):
    x = torch.zeros(batch, unet.config.in_channels, side, side)
    t = torch.full((batch,), 500.0)
    ctx = torch.zeros(batch, tokens, width)
    return lambda: unet(x, t, encoder_hidden_states=ctx).sample


SD21_UNET = {"cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20], "use_linear_projection": True}


def fast_models(sd15_unet):
    """The 512x512 figures of users' fast models, as `src/cli/bench_fast_models.rs` runs them:
    an LCM-LoRA-shaped 4-step render (a merged LoRA costs what the base does) and an
    SD-Turbo-shaped 1-step SDEdit frame through TAESD."""
    vae = zeroed(AutoencoderKL.from_config(SD15_VAE))
    sd21 = zeroed(UNet2DConditionModel(**SD21_UNET))
    taesd = zeroed(AutoencoderTiny())
    t = torch.full((1,), 500.0)
    latent = torch.zeros(1, 4, 64, 64)
    ctx15, ctx21 = torch.zeros(1, 77, 768), torch.zeros(1, 77, 1024)
    picture = torch.zeros(1, 3, 512, 512)

    def lcm_lora_render():
        x = latent
        for _ in range(4):
            x = sd15_unet(x, t, encoder_hidden_states=ctx15).sample
        return vae.decode(x).sample

    def turbo_frame():
        z = taesd.encode(picture).latents
        x = sd21(z, t, encoder_hidden_states=ctx21).sample
        return taesd.decode(x).sample

    return lcm_lora_render, turbo_frame


def flops_of(fn):
    """GFLOP of one call by PyTorch's own counter (an independent check of ours)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


class BuiltinPipeline:
    """The built-in model's text-to-image and SDEdit loops, as our pipeline runs them."""

    def __init__(self, folder=BUILTIN, scheduler=DDIMScheduler):
        text_config = without_nulls(read_json(folder / "text_encoder" / "config.json"))
        self.text = CLIPTextModel(CLIPTextConfig(**text_config)).to(DEVICE).eval()
        weights = load_file(str(folder / "text_encoder" / "model.safetensors"))
        weights = {k if k.startswith("text_model.") else "text_model." + k: v.to(torch.get_default_dtype()) for k, v in weights.items()}
        self.text.load_state_dict(weights, strict=False)
        # from_pretrained places its weights itself (on the CPU), whatever the default device.
        self.unet = UNet2DConditionModel.from_pretrained(
            folder, subfolder="unet", torch_dtype=torch.get_default_dtype()
        ).to(DEVICE).eval()
        self.vae = builtin_vae().to(DEVICE)
        vae_weights = load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
        self.vae.load_state_dict({k: v.to(torch.get_default_dtype()) for k, v in vae_weights.items()})
        self.scaling = read_json(folder / "vae" / "config.json")["scaling_factor"]
        self.scheduler = scheduler.from_config(without_nulls(read_json(folder / "scheduler" / "scheduler_config.json")))
        tokenizer = read_json(folder / "tokenizer" / "tokenizer.json")
        self.vocab = tokenizer["model"]["vocab"]
        self.tokens = text_config["max_position_embeddings"]
        # Our pipeline keeps the last prompt's conditioning and the last start picture's latent,
        # so after the warm-up call neither is recomputed; PyTorch gets the same caches.
        self.conditioning = {}
        self.encoded = {}

    def ids(self, prompt):
        ids = [self.vocab.get(w, self.vocab["[UNK]"]) for w in prompt.split()][: self.tokens]
        return torch.tensor([ids + [self.vocab["[PAD]"]] * (self.tokens - len(ids))])

    def sample(self, steps, guidance, start=None, strength=1.0, network=None):
        network = network or (lambda x, t, ctx: self.unet(x, t, encoder_hidden_states=ctx).sample)
        if PROMPT not in self.conditioning:
            self.conditioning[PROMPT] = torch.cat(
                [self.text(self.ids("")).last_hidden_state, self.text(self.ids(PROMPT)).last_hidden_state]
            )
        ctx = self.conditioning[PROMPT]
        self.scheduler.set_timesteps(steps)
        timesteps = self.scheduler.timesteps
        side = builtin_latent_side()
        noise = torch.randn(1, self.vae.latent_channels, side, side, generator=generator(1))
        if start is None:
            x = noise * self.scheduler.init_noise_sigma
        else:
            timesteps = timesteps[steps - int(steps * strength):]
            if id(start) not in self.encoded:
                self.encoded[id(start)] = self.vae.encode(start) * self.scaling
            guide = self.encoded[id(start)]
            x = self.scheduler.add_noise(guide, noise, timesteps[:1])
        for t in timesteps:
            eps_u, eps_c = network(torch.cat([x, x]), t, ctx).chunk(2)
            x = self.scheduler.step(eps_u + guidance * (eps_c - eps_u), t, x).prev_sample
        return x

    def render(self, start=None, strength=1.0):
        return self.vae.decode(self.sample(20, 5.0, start, strength) / self.scaling)


class LivePipeline(BuiltinPipeline):
    """The live student's frame as our `live_frame` makes it: the stroke picture encoded, LCM
    img2img at strength 0.5 with the student's default steps (one guidance-embedded pass each, as
    diffusers' `LatentConsistencyModelImg2ImgPipeline`), decoded."""

    def __init__(self):
        super().__init__(LIVE, LCMScheduler)
        defaults = read_json(LIVE / "latent_studio.json")
        self.steps, guidance = defaults["steps"], defaults["guidance"]
        w = torch.tensor([guidance - 1.0])
        dim = self.unet.config.time_cond_proj_dim
        self.w_embedding = LatentConsistencyModelPipeline.get_guidance_scale_embedding(
            None, w, embedding_dim=dim, dtype=torch.get_default_dtype()
        ).to(DEVICE)
        self.ctx = None

    def frame(self, picture):
        if self.ctx is None:
            self.ctx = self.text(self.ids(PROMPT)).last_hidden_state
        self.scheduler.set_timesteps(self.steps, strength=0.5)
        side = builtin_latent_side()
        noise = torch.randn(1, self.vae.latent_channels, side, side, generator=generator(1))
        # Every frame's strokes differ, so every frame encodes its picture (ours too).
        x = self.scheduler.add_noise(self.vae.encode(picture) * self.scaling, noise, self.scheduler.timesteps[:1])
        for t in self.scheduler.timesteps:
            eps = self.unet(x, t, encoder_hidden_states=self.ctx, timestep_cond=self.w_embedding).sample
            x, denoised = self.scheduler.step(eps, t, x, return_dict=False)
        return self.vae.decode(denoised / self.scaling)


def ours(binary, threads, repeat, only):
    """Our figures whose name contains `only`, by name."""
    device = [] if DEVICE == "cpu" else ["--device", DEVICE if ":" in DEVICE else "cuda:0"]
    weights = ["--random-weights"] if RANDOM else []
    out = subprocess.run(
        [str(binary), "--threads", str(threads), *device, "bench", *weights, "--repeat", str(repeat), "--only", only],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {f["name"]: f for f in map(json.loads, filter(None, out.splitlines()))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default=str(REPO / "target" / "release" / "latent-studio"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="ours, then theirs, this many times; medians")
    parser.add_argument("--only", default="", help="run only the figures whose name contains this")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (ours then runs on cuda:0)")
    parser.add_argument("--half", action="store_true", help="PyTorch's side in f16 (as ours runs on a GPU)")
    parser.add_argument("--random-weights", action="store_true", help="random weights on both sides")
    args = parser.parse_args()
    global DEVICE, RANDOM
    DEVICE, RANDOM = args.device, args.random_weights
    torch.set_default_device(DEVICE)
    if args.half:
        torch.set_default_dtype(torch.float16)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    builtin_unet = zeroed(UNet2DConditionModel.from_config(read_json(BUILTIN / "unet" / "config.json")))
    sd15_unet = zeroed(UNet2DConditionModel(cross_attention_dim=768))
    pipe = BuiltinPipeline()
    live = LivePipeline() if (LIVE / "model_index.json").exists() else None
    size = builtin_size()
    picture = torch.zeros(1, 3, size, size)
    vae = zeroed(builtin_vae())
    side = builtin_latent_side()
    latent = torch.zeros(1, vae.latent_channels, side, side)
    identity = lambda x, t, ctx: x  # noqa: E731 - the network replaced by a pass-through
    lcm_lora_render, turbo_frame = fast_models(sd15_unet)

    figures = [
        # (our figure, our --only, PyTorch's callable, repeat, FLOP check)
        ("builtin_unet_eval", "builtin_unet_eval", unet_eval(builtin_unet, 2, side, 16, builtin_unet.config.cross_attention_dim), args.repeat, True),
        ("builtin_vae_encode", "builtin_vae_encode", lambda: vae.encode(picture), args.repeat, False),
        ("builtin_vae_decode", "builtin_vae_decode", lambda: vae.decode(latent), args.repeat, False),
        ("sd15_unet_eval_256", "sd15_unet_eval_256", unet_eval(sd15_unet, 1, 32, 77, 768), min(args.repeat, 3), True),
        ("sd15_vae_decode_256", "sd15_vae_decode_256",
         (lambda vae=zeroed(AutoencoderKL.from_config(SD15_VAE)): vae.decode(torch.zeros(1, 4, 32, 32))),
         min(args.repeat, 3), False),
        ("sd15_unet_eval_512", "sd15_unet_eval_512", unet_eval(sd15_unet, 1, 64, 77, 768), min(args.repeat, 3), False),
        ("lcm_lora_render_512", "lcm_lora_render_512", lcm_lora_render, min(args.repeat, 2), False),
        ("turbo_sdedit_frame_512", "turbo_sdedit_frame_512", turbo_frame, min(args.repeat, 3), False),
        ("builtin_render_20_steps", "builtin_render", pipe.render, args.repeat, False),
        ("builtin_sdedit_0.5", "builtin_sdedit", lambda: pipe.render(picture, 0.5), args.repeat, False),
        ("live_frame", "live_frame", lambda: live.frame(picture), args.repeat, False),
        ("sampler_overhead_per_step", "sampler_overhead",
         lambda: pipe.sample(20, 5.0, network=identity), args.repeat, False),
    ]
    for name, only, fn, repeat, count_flops in figures:
        if args.only not in name or (name == "live_frame" and live is None):
            continue
        # Alternate ours and theirs so that a noisy stretch of the machine hits both.
        mine, theirs = [], []
        for _ in range(max(args.rounds, 1)):
            time.sleep(0.5)  # let PyTorch's OpenMP threads stop spinning before ours start
            mine.append(ours(args.bin, args.threads, args.repeat, only))
            with torch.inference_mode():
                theirs.append(median_ms(fn, repeat))
        value = statistics.median(m[name]["value"] for m in mine)
        theirs = statistics.median(theirs)
        if name == "sampler_overhead_per_step":
            theirs /= 20
        line = {
            "name": name,
            "ours": value,
            "theirs": theirs,
            "unit": "ms",
            "ratio": value / theirs,
            "threads": args.threads,
            "note": f"ratio = ours / PyTorch {torch.__version__}; medians of {len(mine)} alternating rounds",
        }
        if count_flops:
            with torch.inference_mode():
                line["gflop_torch_counter"] = flops_of(fn)
            line["gflop_ours"] = mine[0][name + "_gflop"]["value"]
            line["ceiling_share_ours"] = statistics.median(m[name + "_ceiling_share"]["value"] for m in mine)
        print(json.dumps(line), flush=True)
        print(f"{name:28} ours {value:9.3f} ms   torch {theirs:9.3f} ms   ratio {line['ratio']:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
