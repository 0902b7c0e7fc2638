//! `claim_label_scheme`: which integer stands for which structure.
//!
//! Parameter structs never hold a scheme by value (it could never grow):
//! they point to one (`const claim_label_scheme *labels`, NULL for the
//! EMIDEC defaults), borrowed for the call.

use super::args::{check_struct_size, read_optional_struct, write_default, CStruct};
use super::boundary;
use crate::error::{Error, Result, ResultExt};
use crate::volume::LabelScheme;
use std::mem::size_of;

/// Label conventions of a label map. Defaults to EMIDEC: 0 background,
/// 1 LV blood pool, 2 myocardium, 3 scar, 4 MVO, no RV.
///
/// Initialise with `claim_label_scheme_default(&s, sizeof s)` (or
/// `CLAIM_DEFAULT(claim_label_scheme, &s)`) and change what differs.
/// Labels must be positive (0 is background) and distinct. Outputs are
/// written in the same scheme as the input.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct claim_label_scheme {
    /// `sizeof(claim_label_scheme)`, set by `claim_label_scheme_default()`.
    pub struct_size: u32,
    /// LV blood pool label (default 1).
    pub lv_cavity: i32,
    /// Healthy myocardium label (default 2).
    pub myocardium: i32,
    /// Infarct / scar label (default 3).
    pub scar: i32,
    /// Microvascular obstruction label, inside the scar (default 4).
    pub mvo: i32,
    /// Right-ventricle blood pool label, or -1 when the map has no RV
    /// (default -1).
    pub rv: i32,
}

impl From<LabelScheme> for claim_label_scheme {
    fn from(scheme: LabelScheme) -> Self {
        claim_label_scheme {
            struct_size: size_of::<claim_label_scheme>() as u32,
            lv_cavity: scheme.lv_cavity,
            myocardium: scheme.myocardium,
            scar: scheme.scar,
            mvo: scheme.mvo,
            rv: scheme.rv.unwrap_or(-1),
        }
    }
}

impl Default for claim_label_scheme {
    fn default() -> Self {
        LabelScheme::default().into()
    }
}

// SAFETY: repr(C), starts with u32 struct_size, integers only.
unsafe impl CStruct for claim_label_scheme {
    const C_NAME: &'static str = "claim_label_scheme";
    const FIRST_RELEASE_SIZE: usize = 24;
    fn with_struct_size(self, size: u32) -> Self {
        claim_label_scheme {
            struct_size: size,
            ..self
        }
    }
}

/// The checked Rust scheme of a caller's label scheme (its `struct_size`,
/// `rv` = -1 or a label, and [`LabelScheme::validate`]). `name` names the
/// argument, e.g. `"params.labels"`; the value is usually a member of a
/// parameter struct already copied by `read_struct`.
pub(crate) fn label_scheme_from_c(value: &claim_label_scheme, name: &str) -> Result<LabelScheme> {
    check_struct_size::<claim_label_scheme>(value.struct_size, name)?;
    let rv = match value.rv {
        -1 => None,
        rv if rv > 0 => Some(rv),
        other => {
            return Err(Error::invalid(format!(
                "{name}.rv: expected -1 (no RV) or a positive label, got {other}"
            )))
        }
    };
    let scheme = LabelScheme {
        lv_cavity: value.lv_cavity,
        myocardium: value.myocardium,
        scar: value.scar,
        mvo: value.mvo,
        rv,
    };
    scheme.validate().context(name)?;
    Ok(scheme)
}

/// The checked Rust scheme behind a caller's optional `labels` pointer:
/// NULL gives the EMIDEC defaults, anything else is read (at most its
/// `struct_size` bytes) and checked by [`label_scheme_from_c`].
///
/// # Safety
///
/// `ptr` must be NULL or point to a `claim_label_scheme` of `struct_size`
/// readable bytes.
pub(crate) unsafe fn label_scheme_from_ptr(
    ptr: *const claim_label_scheme,
    name: &str,
) -> Result<LabelScheme> {
    // SAFETY: forwarded contract.
    let value = unsafe { read_optional_struct(ptr, name) }?;
    label_scheme_from_c(&value, name)
}

/// Fills `*out` with the EMIDEC scheme (1 LV cavity, 2 myocardium, 3 scar,
/// 4 MVO, rv = -1).
///
/// `size`: the caller's `sizeof(claim_label_scheme)` (the
/// `CLAIM_DEFAULT(claim_label_scheme, &s)` macro passes it). Writes the
/// first `min(size, sizeof(claim_label_scheme))` bytes and sets
/// `struct_size` to that number, so a caller built against an older,
/// smaller struct is never overrun; writes nothing when `size` < 4. Does
/// nothing when `out` is NULL. Thread-safe; does not change
/// `claim_last_error_message()`.
#[no_mangle]
pub extern "C" fn claim_label_scheme_default(out: *mut claim_label_scheme, size: usize) {
    boundary::call_infallible("claim_label_scheme_default", (), || {
        // SAFETY: `out` is NULL or writable for `size` bytes (header contract).
        unsafe { write_default(out, size) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_emidec_without_rv() {
        let mut s = claim_label_scheme {
            struct_size: 0,
            lv_cavity: 9,
            myocardium: 9,
            scar: 9,
            mvo: 9,
            rv: 9,
        };
        claim_label_scheme_default(&mut s, size_of::<claim_label_scheme>());
        assert_eq!(s.struct_size, 24);
        assert_eq!(
            (s.lv_cavity, s.myocardium, s.scar, s.mvo, s.rv),
            (1, 2, 3, 4, -1)
        );
        assert_eq!(
            label_scheme_from_c(&s, "labels").unwrap(),
            LabelScheme::EMIDEC
        );
        claim_label_scheme_default(std::ptr::null_mut(), 24);
        // SAFETY: NULL stands for the defaults; `s` is a live scheme.
        unsafe {
            assert_eq!(
                label_scheme_from_ptr(std::ptr::null(), "labels").unwrap(),
                LabelScheme::EMIDEC
            );
            assert_eq!(
                label_scheme_from_ptr(&s, "labels").unwrap(),
                LabelScheme::EMIDEC
            );
        }
    }

    #[test]
    fn conversion_checks_rv_and_validity() {
        let with_rv = claim_label_scheme::from(LabelScheme::EMIDEC_WITH_RV);
        assert_eq!(label_scheme_from_c(&with_rv, "l").unwrap().rv, Some(5));

        let bad_rv = claim_label_scheme {
            rv: -2,
            ..Default::default()
        };
        let msg = label_scheme_from_c(&bad_rv, "params.labels")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("params.labels.rv") && msg.contains("got -2"),
            "{msg}"
        );

        let zero_rv = claim_label_scheme {
            rv: 0,
            ..Default::default()
        };
        assert!(label_scheme_from_c(&zero_rv, "l").is_err());

        let dup = claim_label_scheme {
            mvo: 3,
            ..Default::default()
        };
        let msg = label_scheme_from_c(&dup, "params.labels")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("params.labels: label scheme") && msg.contains("share"),
            "{msg}"
        );

        let unset = claim_label_scheme {
            struct_size: 0,
            ..Default::default()
        };
        let msg = label_scheme_from_c(&unset, "params.labels")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("params.labels.struct_size"), "{msg}");
    }
}
