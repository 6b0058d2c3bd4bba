//! Step previews on the GPU: `shaders/latent_preview.wgsl` applies the model's latent-to-RGB map
//! per pixel inside egui's render pass, so a preview costs one small buffer upload per step. Where
//! no wgpu adapter exists the studio applies the same map on the CPU (`LatentRgbMap::apply`).

use eframe::egui_wgpu::{self, wgpu};

use crate::models::preview::LatentRgbMap;

/// The shader's source.
pub const SHADER: &str = include_str!("../../shaders/latent_preview.wgsl");

/// Most latent channels the shader handles.
pub const MAX_CHANNELS: usize = 16;

/// Bytes of the shader's `Params` uniform: 16 weight rows, the bias, the dimensions.
const PARAMS_BYTES: usize = (MAX_CHANNELS + 2) * 16;

/// The uniform block for `map` and a latent of `channels × height × width`.
pub fn params_bytes(map: &LatentRgbMap, channels: usize, height: usize, width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(PARAMS_BYTES);
    for c in 0..MAX_CHANNELS {
        let w = map.weights.get(c).copied().unwrap_or([0.0; 3]);
        for v in [w[0], w[1], w[2], 0.0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    for v in [map.bias[0], map.bias[1], map.bias[2], 0.0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [channels as u32, height as u32, width as u32, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The preview pipeline and its buffers.
pub struct PreviewPipeline {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    bind: Option<(wgpu::Buffer, wgpu::Buffer, wgpu::BindGroup, usize)>,
}

impl PreviewPipeline {
    /// Compiles the shader for render targets of `format`.
    pub fn new(device: &wgpu::Device, format: wgpu::TextureFormat) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("latent preview"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("latent preview"),
            entries: &[
                entry(0, wgpu::BufferBindingType::Uniform),
                entry(1, wgpu::BufferBindingType::Storage { read_only: true }),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("latent preview"),
            bind_group_layouts: &[Some(&layout)],
            ..Default::default()
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("latent preview"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vs_main"),
                buffers: &[],
                compilation_options: Default::default(),
            },
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("fs_main"),
                targets: &[Some(format.into())],
                compilation_options: Default::default(),
            }),
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            multiview_mask: None,
            cache: None,
        });
        Self { pipeline, layout, bind: None }
    }

    /// Uploads a latent (`channels × height × width`, channel-major) and the map.
    pub fn upload(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        map: &LatentRgbMap,
        latent: &[f32],
        dims: (usize, usize, usize),
    ) {
        let bytes: Vec<u8> = latent.iter().flat_map(|v| v.to_le_bytes()).collect();
        let fits = self.bind.as_ref().is_some_and(|(_, _, _, len)| *len == bytes.len());
        if !fits {
            let params = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("latent preview params"),
                size: PARAMS_BYTES as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let data = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("latent preview data"),
                size: bytes.len().max(4) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("latent preview"),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: data.as_entire_binding() },
                ],
            });
            self.bind = Some((params, data, group, bytes.len()));
        }
        if let Some((params, data, _, _)) = &self.bind {
            queue.write_buffer(params, 0, &params_bytes(map, dims.0, dims.1, dims.2));
            queue.write_buffer(data, 0, &bytes);
        }
    }

    /// Draws the uploaded preview into the pass's viewport.
    pub fn draw(&self, pass: &mut wgpu::RenderPass<'_>) {
        if let Some((_, _, group, _)) = &self.bind {
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, group, &[]);
            pass.draw(0..3, 0..1);
        }
    }
}

/// An egui paint callback drawing one preview.
pub struct PreviewCallback {
    /// The map.
    pub map: LatentRgbMap,
    /// The latent, channel-major.
    pub latent: Vec<f32>,
    /// (channels, height, width).
    pub dims: (usize, usize, usize),
}

impl egui_wgpu::CallbackTrait for PreviewCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(pipeline) = resources.get_mut::<PreviewPipeline>() {
            pipeline.upload(device, queue, &self.map, &self.latent, self.dims);
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        pass: &mut wgpu::RenderPass<'static>,
        resources: &egui_wgpu::CallbackResources,
    ) {
        if let Some(pipeline) = resources.get::<PreviewPipeline>() {
            pipeline.draw(pass);
        }
    }
}

/// Installs the pipeline into eframe's renderer; returns whether GPU previews are available.
/// Adapters without storage buffers in the fragment stage (wgpu's OpenGL backend, which a
/// machine without Vulkan falls back to) keep the CPU previews instead of failing to build it.
pub fn install(render_state: Option<&egui_wgpu::RenderState>) -> bool {
    let Some(state) = render_state else { return false };
    if !supports_storage_buffers(&state.device.limits()) {
        return false;
    }
    let pipeline = PreviewPipeline::new(&state.device, state.target_format);
    state.renderer.write().callback_resources.insert(pipeline);
    true
}

/// Whether the preview shader's latent buffer (a read-only storage buffer read by the fragment
/// stage) fits the device's limits.
fn supports_storage_buffers(limits: &wgpu::Limits) -> bool {
    limits.max_storage_buffers_per_shader_stage >= 1
}

#[cfg(test)]
mod tests {
    use super::{supports_storage_buffers, wgpu};

    #[test]
    fn gl_class_limits_fall_back_to_cpu_previews() {
        // wgpu's WebGL2 / GLES-class limits have no storage buffers; its defaults (Vulkan, Metal,
        // DX12) do.
        assert!(!supports_storage_buffers(&wgpu::Limits::downlevel_webgl2_defaults()));
        assert!(supports_storage_buffers(&wgpu::Limits::default()));
    }
}
