// Live step previews: the model's linear latent-to-RGB map, applied per pixel on the GPU.
// rgb = bias + sum_c weights[c] * latent[c, y, x], in [-1, 1] image units, shown as (rgb + 1) / 2.
// The CPU twin is `LatentRgbMap::apply` (src/models/preview.rs); tests/preview_shader.rs checks
// that both give the same bytes.

struct Params {
    // weights[c].rgb for latent channel c (at most 16 channels).
    weights: array<vec4<f32>, 16>,
    bias: vec4<f32>,
    // channels, height, width, unused.
    dims: vec4<u32>,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> latent: array<f32>;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

// One triangle covering the viewport; uv runs 0..1 over it.
@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    let x = f32((index << 1u) & 2u);
    let y = f32(index & 2u);
    var out: VertexOut;
    out.position = vec4<f32>(x * 2.0 - 1.0, 1.0 - y * 2.0, 0.0, 1.0);
    out.uv = vec2<f32>(x, y);
    return out;
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let channels = params.dims.x;
    let h = params.dims.y;
    let w = params.dims.z;
    let px = min(u32(in.uv.x * f32(w)), w - 1u);
    let py = min(u32(in.uv.y * f32(h)), h - 1u);
    var rgb = params.bias.xyz;
    for (var c = 0u; c < min(channels, 16u); c = c + 1u) {
        rgb = rgb + params.weights[c].xyz * latent[(c * h + py) * w + px];
    }
    return vec4<f32>((clamp(rgb, vec3<f32>(-1.0), vec3<f32>(1.0)) + 1.0) * 0.5, 1.0);
}
