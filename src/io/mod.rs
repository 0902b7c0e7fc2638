//! File formats: NIfTI-1 images (and later checkpoints).

pub mod atomic;
pub mod emidec;
pub mod nifti;
pub mod png;
pub mod torch;

pub use nifti::{read_image, write_image};

/// Whether `bytes` can be a safetensors file at all: an 8-byte little-endian
/// header length that fits in the file, then a JSON object. Garbage is
/// [`crate::Error::Format`] "not a safetensors file" with the reason, before
/// the safetensors parser would report it in its own terms ("header too
/// large", ...). A zip archive or a bare pickle is named as a PyTorch
/// checkpoint.
pub fn check_safetensors_magic(bytes: &[u8]) -> crate::Result<()> {
    let why = match safetensors_layout_problem(bytes) {
        None => return Ok(()),
        Some(why) => why,
    };
    let why = if looks_like_torch_checkpoint(bytes) {
        "it is a PyTorch checkpoint (.pt/.pth); convert it with `claim import`".to_string()
    } else {
        why
    };
    Err(crate::Error::format(format!(
        "not a safetensors file: {why}"
    )))
}

/// Whether `bytes` start like a `torch.save` file: a zip archive, or a bare
/// pickle (the legacy format: PROTO opcode, protocol 2 to 5).
pub fn looks_like_torch_checkpoint(bytes: &[u8]) -> bool {
    // A safetensors header length of 0x0280.. also starts 80 02, but its
    // next six bytes are zero (headers are far below 2^48 bytes) and a `{`
    // follows; a pickle's are opcodes.
    bytes.starts_with(b"PK\x03\x04")
        || matches!(bytes, [0x80, 2..=5, ..])
            && (bytes.get(2..8).is_some_and(|b| b.iter().any(|&x| x != 0))
                || bytes.get(8) != Some(&b'{'))
}

/// Why `bytes` cannot be a safetensors file, if they cannot.
fn safetensors_layout_problem(bytes: &[u8]) -> Option<String> {
    let Some(len) = bytes.get(..8) else {
        return Some(format!(
            "{} bytes, fewer than the 8-byte header length",
            bytes.len()
        ));
    };
    let mut le = [0u8; 8];
    le.copy_from_slice(len);
    let header = u64::from_le_bytes(le);
    let rest = bytes.len() as u64 - 8;
    if header < 2 || header > rest {
        return Some(format!(
            "its first 8 bytes declare a {header}-byte header but {rest} bytes follow"
        ));
    }
    if bytes.get(8) != Some(&b'{') {
        return Some("its header is not a JSON object".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_safetensors_file() {
        for (bytes, why) in [
            (&b"garbage garbage garbage garbage"[..], "declare"),
            (&b"short"[..], "fewer than"),
            (&b"PK\x03\x04rest"[..], "PyTorch checkpoint"),
            (&b"\x80\x02}q\x00."[..], "PyTorch checkpoint"),
            (&b"\x04\x00\x00\x00\x00\x00\x00\x00[1] "[..], "JSON object"),
        ] {
            let msg = check_safetensors_magic(bytes).unwrap_err().to_string();
            assert!(
                msg.contains("not a safetensors file") && msg.contains(why),
                "{msg}"
            );
        }
        assert!(check_safetensors_magic(b"\x02\x00\x00\x00\x00\x00\x00\x00{}").is_ok());
    }
}
