//! PNG output through the `png` crate: 8-bit RGB images (bull's-eye plots,
//! slice overlays).

use crate::{Error, Result};

/// Encodes `rgb` (`width × height` pixels, row-major, 3 bytes each) as an
/// 8-bit RGB PNG.
pub fn encode_rgb(width: usize, height: usize, rgb: &[u8]) -> Result<Vec<u8>> {
    if width == 0 || height == 0 || rgb.len() != width * height * 3 {
        return Err(Error::Internal(format!(
            "PNG: {} bytes for {width}×{height} RGB",
            rgb.len()
        )));
    }
    let w = u32::try_from(width).map_err(|_| Error::invalid("PNG too wide"))?;
    let h = u32::try_from(height).map_err(|_| Error::invalid("PNG too tall"))?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let fail = |e: png::EncodingError| Error::Internal(format!("PNG: {e}"));
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(rgb).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

/// Decodes an 8-bit RGB PNG into `(width, height, rgb)` (for tests and
/// tools that check what was written).
pub fn decode_rgb(bytes: &[u8]) -> Result<(usize, usize, Vec<u8>)> {
    let fail = |e: png::DecodingError| Error::format(format!("PNG: {e}"));
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().map_err(fail)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| Error::format("PNG: image too large"))?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(fail)?;
    if info.color_type != png::ColorType::Rgb || info.bit_depth != png::BitDepth::Eight {
        return Err(Error::format(format!(
            "PNG: {:?} {:?}, expected 8-bit RGB",
            info.color_type, info.bit_depth
        )));
    }
    buf.truncate(info.buffer_size());
    Ok((info.width as usize, info.height as usize, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_round_trips() {
        let rgb: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 7) as u8).collect();
        let png = encode_rgb(4, 3, &rgb).unwrap();
        assert_eq!(&png[..8], &[0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A]);
        assert_eq!(decode_rgb(&png).unwrap(), (4, 3, rgb));
        assert!(encode_rgb(4, 3, &[0; 5]).is_err());
    }
}
