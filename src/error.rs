//! The one error type of the library.
//!
//! Every variant maps 1:1 onto a `claim_status` code of the C ABI (see
//! [`Error::status_code`]); the codes are part of the ABI and never change.

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
        Error::Io(format!("{}: {err}", path.display()))
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
}
