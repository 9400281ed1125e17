//! Save sets: objects saved as one encrypted tape file, their index, and restoring and verifying them.
pub mod format;
