//! The C ABI shell. Every export goes through one boundary helper; no logic lives here.
