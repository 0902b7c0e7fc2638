//! Procedural short-axis LGE phantom: the built-in demo case and test data.
