//! Save sets: objects saved as one encrypted tape file, their index, and restoring and verifying them.
pub mod catalog;
pub mod deferred;
pub mod dest;
pub mod format;
pub mod names;
pub mod read;
pub mod save;
pub mod walk;
