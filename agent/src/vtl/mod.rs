//! The virtual tape library (filled in next).
