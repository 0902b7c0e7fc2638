//! The one error type of the library.
//!
//! Every variant maps 1:1 onto a `claim_status` code of the C ABI (see
//! [`Error::status_code`]); the codes are part of the ABI and never change.

use std::fmt::Display;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `claim`.
///
/// Messages name the offending argument, file or tensor and say what was
/// expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A caller passed an argument that is out of range, inconsistent or NULL.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A file could not be opened, read or written.
    #[error("I/O error: {0}")]
    Io(String),
    /// A file was read but its contents are not valid for its format.
    #[error("format error: {0}")]
    Format(String),
    /// Model weights are missing, extra or misshapen.
    #[error("model error: {0}")]
    Model(String),
    /// An accelerator is unavailable or failed.
    #[error("device error: {0}")]
    Device(String),
    /// An allocation was refused (or would be absurdly large).
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// The caller's progress callback asked to stop.
    #[error("cancelled by the caller")]
    Cancelled,
    /// A valid request for something this build does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A bug inside claim (including a caught panic).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable `claim_status` number of this error (`CLAIM_OK` is 0).
    pub fn status_code(&self) -> i32 {
        match self {
            Error::InvalidArgument(_) => 1,
            Error::Io(_) => 2,
            Error::Format(_) => 3,
            Error::Model(_) => 4,
            Error::Device(_) => 5,
            Error::OutOfMemory(_) => 6,
            Error::Cancelled => 7,
            Error::Unsupported(_) => 8,
            Error::Internal(_) => 9,
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// Shorthand for [`Error::Format`].
    pub fn format(msg: impl Into<String>) -> Self {
        Error::Format(msg.into())
    }

    /// An I/O error that names the path it happened on.
    pub fn io_at(path: &std::path::Path, err: &std::io::Error) -> Self {
        Error::Io(format!("{}: {err}", path_text(path)))
    }

    /// The same error with `what` (an argument, file, case, tensor, ...)
    /// in front of its message: `"<what>: <message>"`. The variant, and so
    /// the `claim_status`, is kept; [`Error::Cancelled`] has no message and
    /// is returned as it is. The one way to say where an error happened:
    /// no hand-written `match` re-wrapping messages.
    pub fn context(self, what: impl Display) -> Error {
        let prefixed = |message: String| format!("{what}: {message}");
        match self {
            Error::InvalidArgument(m) => Error::InvalidArgument(prefixed(m)),
            Error::Io(m) => Error::Io(prefixed(m)),
            Error::Format(m) => Error::Format(prefixed(m)),
            Error::Model(m) => Error::Model(prefixed(m)),
            Error::Device(m) => Error::Device(prefixed(m)),
            Error::OutOfMemory(m) => Error::OutOfMemory(prefixed(m)),
            Error::Cancelled => Error::Cancelled,
            Error::Unsupported(m) => Error::Unsupported(prefixed(m)),
            Error::Internal(m) => Error::Internal(prefixed(m)),
        }
    }
}

/// A path as messages show it: its text, or `"" (an empty path)` so that an
/// empty path never prints as nothing.
pub fn path_text(path: &std::path::Path) -> String {
    if path.as_os_str().is_empty() {
        "\"\" (an empty path)".to_string()
    } else {
        path.display().to_string()
    }
}

/// [`Error::context`] on the error of a [`Result`].
pub trait ResultExt<T> {
    /// Prefixes the error's message with `what`; see [`Error::context`].
    fn context(self, what: impl Display) -> Result<T>;

    /// As [`ResultExt::context`], with the prefix built only on failure.
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, what: impl Display) -> Result<T> {
        self.map_err(|e| e.context(what))
    }

    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.context(what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_distinct_and_stable() {
        let all = [
            Error::invalid("a"),
            Error::Io("b".into()),
            Error::format("c"),
            Error::Model("d".into()),
            Error::Device("e".into()),
            Error::OutOfMemory("f".into()),
            Error::Cancelled,
            Error::Unsupported("g".into()),
            Error::Internal("h".into()),
        ];
        let codes: Vec<i32> = all.iter().map(Error::status_code).collect();
        assert_eq!(codes, (1..=9).collect::<Vec<_>>());
    }

    #[test]
    fn context_prefixes_the_message_and_keeps_the_variant() {
        let all = [
            Error::invalid("a"),
            Error::Io("b".into()),
            Error::format("c"),
            Error::Model("d".into()),
            Error::Device("e".into()),
            Error::OutOfMemory("f".into()),
            Error::Unsupported("g".into()),
            Error::Internal("h".into()),
        ];
        for err in all {
            let code = err.status_code();
            let before = err.to_string();
            let after = err.context("params.labels");
            assert_eq!(after.status_code(), code);
            let (kind, message) = before.split_once(": ").unwrap();
            assert_eq!(
                after.to_string(),
                format!("{kind}: params.labels: {message}")
            );
        }
        assert!(matches!(Error::Cancelled.context("x"), Error::Cancelled));

        let ok: Result<u8> = Ok(1);
        assert_eq!(ok.context("unused").unwrap(), 1);
        let failed: Result<u8> = Err(Error::format("bad magic"));
        let msg = failed.with_context(|| format!("case {}", 7)).unwrap_err();
        assert_eq!(msg.to_string(), "format error: case 7: bad magic");
    }
}
