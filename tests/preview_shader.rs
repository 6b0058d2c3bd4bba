//! The WGSL preview shader and the CPU path give the same bytes: the shader renders a latent at
//! latent resolution into an offscreen texture (Mesa's lavapipe in CI), which is read back and
//! compared with `LatentRgbMap::apply`.

use candle_core::{DType, Device, Tensor};
use eframe::egui_wgpu::wgpu;
use latent_studio::core::SeededNoise;
use latent_studio::models::preview::LatentRgbMap;
use latent_studio::ui::preview_gpu::PreviewPipeline;

fn device() -> Option<(wgpu::Device, wgpu::Queue)> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).ok()?;
    pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).ok()
}

#[test]
fn the_shader_and_the_cpu_apply_the_same_map() {
    let Some((device, queue)) = device() else {
        // CI installs lavapipe; say so loudly where it is missing rather than pass silently.
        assert!(
            std::env::var_os("LATENT_STUDIO_NO_GPU").is_some(),
            "no wgpu adapter (install mesa-vulkan-drivers)"
        );
        return;
    };
    let (c, h, w) = (4usize, 16usize, 16usize);
    let map = LatentRgbMap {
        weights: vec![[0.30, -0.20, 0.10], [0.05, 0.40, -0.30], [-0.10, 0.10, 0.20], [0.20, 0.00, -0.05]],
        bias: [0.10, -0.05, 0.02],
    };
    let latent =
        SeededNoise::new(7).tensor(&[1, c, h, w], DType::F32, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"));
    let cpu = map.apply(&latent).unwrap_or_else(|e| panic!("{e}"));
    let values: Vec<f32> = latent.flatten_all().and_then(|t: Tensor| t.to_vec1()).unwrap_or_default();

    let format = wgpu::TextureFormat::Rgba8Unorm;
    let mut pipeline = PreviewPipeline::new(&device, format);
    pipeline.upload(&device, &queue, &map, &values, (c, h, w));
    let size = wgpu::Extent3d { width: w as u32, height: h as u32, depth_or_array_layers: 1 };
    let target = device.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let view = target.create_view(&wgpu::TextureViewDescriptor::default());
    // Rows padded to 256 bytes for the copy.
    let row = 256u32;
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: u64::from(row) * h as u64,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    {
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: None,
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: &view,
                resolve_target: None,
                depth_slice: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                    store: wgpu::StoreOp::Store,
                },
            })],
            ..Default::default()
        });
        pipeline.draw(&mut pass);
    }
    encoder.copy_texture_to_buffer(
        target.as_image_copy(),
        wgpu::TexelCopyBufferInfo {
            buffer: &readback,
            layout: wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(row), rows_per_image: None },
        },
        size,
    );
    queue.submit([encoder.finish()]);
    readback.slice(..).map_async(wgpu::MapMode::Read, |_| {});
    let _ = device.poll(wgpu::PollType::wait_indefinitely());
    let bytes = readback.slice(..).get_mapped_range().map(|v| v.to_vec()).unwrap_or_default();
    let mut worst = 0u8;
    for y in 0..h {
        for x in 0..w {
            for t in 0..3 {
                let gpu = bytes[y * row as usize + x * 4 + t];
                worst = worst.max(gpu.abs_diff(cpu[(y * w + x) * 3 + t]));
            }
        }
    }
    // Float rounding at exact .5 boundaries may differ by one step between the two.
    assert!(worst <= 1, "GPU and CPU previews differ by {worst}/255");
    let spread = cpu.iter().max().copied().unwrap_or(0) - cpu.iter().min().copied().unwrap_or(0);
    assert!(spread > 100, "the test latent exercises the map's range ({spread})");
}
