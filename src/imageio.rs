//! PNG files: reading pictures for SDEdit and masks, writing renders with their generation
//! parameters. Files are written to a temporary name and renamed, so a crash never leaves half a
//! file.

use std::path::{Path, PathBuf};

/// Reading or writing a PNG failed; names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ImageError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

fn err(path: &Path, reason: impl ToString) -> ImageError {
    ImageError { path: path.into(), reason: reason.to_string() }
}

/// An 8-bit RGB picture, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width × height × 3` bytes.
    pub data: Vec<u8>,
}

/// Reads any PNG (grey, palette, alpha, 16-bit) as 8-bit RGB; alpha is dropped.
pub fn read_png(path: &Path) -> Result<Rgb, ImageError> {
    let file = std::fs::File::open(path).map_err(|e| err(path, e))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| err(path, format!("not a readable PNG: {e}")))?;
    let size = reader.output_buffer_size().ok_or_else(|| err(path, "image too large"))?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(|e| err(path, format!("corrupt PNG data: {e}")))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err(err(path, "unexpanded palette image")),
    };
    let data = buf[..w * h * channels]
        .chunks(channels)
        .flat_map(|p| if channels < 3 { [p[0], p[0], p[0]] } else { [p[0], p[1], p[2]] })
        .collect();
    Ok(Rgb { width: w, height: h, data })
}

/// Writes an RGB PNG with `parameters` (AUTOMATIC1111's format) as a text chunk.
pub fn write_png(path: &Path, image: &Rgb, parameters: &str) -> Result<(), ImageError> {
    write_png_texts(path, image, &[("parameters", parameters)])
}

/// Writes an RGB PNG with text chunks (keyword, text): `parameters` as tEXt where the text is
/// Latin-1 (as AUTOMATIC1111 writes it), every other chunk as UTF-8 iTXt. Written to a temporary
/// name and renamed.
pub fn write_png_texts(path: &Path, image: &Rgb, texts: &[(&str, &str)]) -> Result<(), ImageError> {
    let tmp = temporary_name(path);
    let result = (|| -> Result<(), png::EncodingError> {
        let file = std::fs::File::create(&tmp)?;
        let mut encoder =
            png::Encoder::new(std::io::BufWriter::new(file), image.width as u32, image.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        for (keyword, text) in texts {
            if *keyword == "parameters" && text.chars().all(|c| (c as u32) < 256) {
                encoder.add_text_chunk(keyword.to_string(), text.to_string())?;
            } else {
                encoder.add_itxt_chunk(keyword.to_string(), text.to_string())?;
            }
        }
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&image.data)?;
        writer.finish()
    })();
    result.map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(path, e))
}

/// A sibling name to write to before renaming over `path`.
fn temporary_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to a temporary name beside `path`, flushes it, and renames it over `path`, so
/// a crash leaves the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = temporary_name(path);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads a PNG, JPEG, BMP or WebP file as 8-bit RGB.
pub fn read_image(path: &Path) -> Result<Rgb, ImageError> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        return read_png(path);
    }
    let image = image::open(path).map_err(|e| err(path, format!("not a readable image: {e}")))?.to_rgb8();
    Ok(Rgb { width: image.width() as usize, height: image.height() as usize, data: image.into_raw() })
}

/// Resizes with bilinear filtering (for fitting a picture to the model's size).
pub fn resize(image: &Rgb, width: usize, height: usize) -> Rgb {
    if (image.width, image.height) == (width, height) || image.width == 0 || image.height == 0 {
        return if image.width == 0 || image.height == 0 {
            Rgb { width, height, data: vec![0; width * height * 3] }
        } else {
            image.clone()
        };
    }
    let mut data = Vec::with_capacity(width * height * 3);
    let sample = |x: usize, y: usize, c: usize| image.data[3 * (y * image.width + x) + c] as f32;
    for y in 0..height {
        let fy = ((y as f32 + 0.5) * image.height as f32 / height as f32 - 0.5)
            .clamp(0.0, (image.height - 1) as f32);
        let (y0, ty) = (fy.floor() as usize, fy.fract());
        let y1 = (y0 + 1).min(image.height - 1);
        for x in 0..width {
            let fx = ((x as f32 + 0.5) * image.width as f32 / width as f32 - 0.5)
                .clamp(0.0, (image.width - 1) as f32);
            let (x0, tx) = (fx.floor() as usize, fx.fract());
            let x1 = (x0 + 1).min(image.width - 1);
            for c in 0..3 {
                let top = sample(x0, y0, c) * (1.0 - tx) + sample(x1, y0, c) * tx;
                let bottom = sample(x0, y1, c) * (1.0 - tx) + sample(x1, y1, c) * tx;
                data.push((top * (1.0 - ty) + bottom * ty).round() as u8);
            }
        }
    }
    Rgb { width, height, data }
}

/// A sheet of square `size`×`size` pictures (RGB, channels last, values in [0, 1]) laid out in
/// rows on white, 4 pixels apart, each enlarged by whole pixels to at least 128 on a side: what
/// `eval` and `train` write for people to look at.
pub fn sheet(rows: &[Vec<Vec<f32>>], size: usize) -> Rgb {
    let (zoom, gap) = ((128 / size.max(1)).max(1), 4);
    let tile = size * zoom;
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let (width, height) = (cols * (tile + gap) + gap, rows.len() * (tile + gap) + gap);
    let mut data = vec![255u8; width * height * 3];
    for (r, row) in rows.iter().enumerate() {
        for (c, picture) in row.iter().enumerate() {
            let (x0, y0) = (gap + c * (tile + gap), gap + r * (tile + gap));
            for y in 0..tile {
                for x in 0..tile {
                    let from = ((y / zoom) * size + x / zoom) * 3;
                    let to = ((y0 + y) * width + x0 + x) * 3;
                    for k in 0..3 {
                        let value = picture.get(from + k).copied().unwrap_or(1.0);
                        data[to + k] = (value.clamp(0.0, 1.0) * 255.0).round() as u8;
                    }
                }
            }
        }
    }
    Rgb { width, height, data }
}

/// Writes an endlessly looping GIF at 12 frames per second (8 centiseconds a frame), atomically.
pub fn write_gif(path: &Path, frames: &[Rgb]) -> Result<(), ImageError> {
    let tmp = temporary_name(path);
    let Some(first) = frames.first() else { return Err(err(path, "no frames to write")) };
    let result = (|| -> Result<(), gif::EncodingError> {
        let file = std::fs::File::create(&tmp)?;
        let mut encoder =
            gif::Encoder::new(std::io::BufWriter::new(file), first.width as u16, first.height as u16, &[])?;
        encoder.set_repeat(gif::Repeat::Infinite)?;
        for f in frames {
            let mut frame = gif::Frame::from_rgb_speed(f.width as u16, f.height as u16, &f.data, 10);
            frame.delay = 8;
            encoder.write_frame(&frame)?;
        }
        Ok(())
    })();
    result.map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(path, e))
}

/// The text chunks of a PNG, keyword and text.
pub fn read_png_text(path: &Path) -> Result<Vec<(String, String)>, ImageError> {
    let file = std::fs::File::open(path).map_err(|e| err(path, e))?;
    let reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().map_err(|e| err(path, e))?;
    let info = reader.info();
    let mut out: Vec<(String, String)> =
        info.uncompressed_latin1_text.iter().map(|t| (t.keyword.clone(), t.text.clone())).collect();
    for t in &info.utf8_text {
        out.push((t.keyword.clone(), t.get_text().map_err(|e| err(path, e))?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_survive_a_round_trip_in_latin1_and_utf8() {
        let dir = std::env::temp_dir();
        let image = Rgb { width: 2, height: 1, data: vec![255, 0, 0, 0, 0, 255] };
        for (i, text) in ["a lake\nSteps: 20, Sampler: DDIM", "a lake 湖\nSteps: 20"].iter().enumerate() {
            let path = dir.join(format!("latent-studio-png-{}-{i}.png", std::process::id()));
            write_png(&path, &image, text).unwrap();
            assert_eq!(read_png(&path).unwrap(), image);
            assert_eq!(read_png_text(&path).unwrap(), vec![("parameters".to_string(), text.to_string())]);
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn a_file_that_is_not_a_png_is_a_named_error() {
        let path = std::env::temp_dir().join(format!("latent-studio-not-png-{}.png", std::process::id()));
        std::fs::write(&path, b"hello").unwrap();
        let e = read_png(&path).unwrap_err();
        assert!(e.to_string().contains("not a readable PNG"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_sheet_places_enlarged_tiles_on_white() {
        // Two rows: a black 64x64 picture, then a row with a red one and a green one.
        let size = 64;
        let flat = |c: [f32; 3]| c.iter().copied().cycle().take(size * size * 3).collect::<Vec<f32>>();
        let rows = vec![vec![flat([0.0; 3])], vec![flat([1.0, 0.0, 0.0]), flat([0.0, 1.0, 0.0])]];
        let s = sheet(&rows, size);
        // Tiles are enlarged twice to 128, 4 apart and 4 from the edges.
        assert_eq!((s.width, s.height), (4 + 2 * 132, 4 + 2 * 132));
        let at = |x: usize, y: usize| &s.data[(y * s.width + x) * 3..][..3];
        assert_eq!(at(0, 0), [255, 255, 255]);
        assert_eq!(at(4, 4), [0, 0, 0]);
        assert_eq!(at(131, 131), [0, 0, 0]);
        assert_eq!(at(132, 4), [255, 255, 255]);
        // The first row has one picture: white where the second would be.
        assert_eq!(at(140, 10), [255, 255, 255]);
        assert_eq!(at(4, 136), [255, 0, 0]);
        assert_eq!(at(136, 136), [0, 255, 0]);
        assert_eq!(at(136 + 127, 136 + 127), [0, 255, 0]);
    }
}
