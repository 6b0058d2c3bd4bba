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

/// Writes an RGB PNG with `parameters` (AUTOMATIC1111's format) as a tEXt chunk, or iTXt when
/// the text is not Latin-1.
pub fn write_png(path: &Path, image: &Rgb, parameters: &str) -> Result<(), ImageError> {
    let tmp = path.with_extension("png.tmp");
    let result = (|| -> Result<(), png::EncodingError> {
        let file = std::fs::File::create(&tmp)?;
        let mut encoder =
            png::Encoder::new(std::io::BufWriter::new(file), image.width as u32, image.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        if parameters.chars().all(|c| (c as u32) < 256) {
            encoder.add_text_chunk("parameters".into(), parameters.into())?;
        } else {
            encoder.add_itxt_chunk("parameters".into(), parameters.into())?;
        }
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&image.data)?;
        writer.finish()
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
}
