//! Why an operation failed, as KMIP says it: a result reason and a message naming what is wrong.

pub use cinta_kmip::message::ResultReason as Reason;

/// A failed operation's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub reason: Reason,
    pub message: String,
}

impl Fault {
    pub fn new(reason: Reason, message: impl Into<String>) -> Fault {
        Fault {
            reason,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Fault {
        Fault::new(Reason::InvalidField, message)
    }
    pub fn missing(message: impl Into<String>) -> Fault {
        Fault::new(Reason::MissingData, message)
    }
    pub fn not_found(uid: &str) -> Fault {
        Fault::new(Reason::ItemNotFound, format!("no object '{uid}'"))
    }
    /// A lifecycle rule refused the operation.
    pub fn state(message: impl Into<String>) -> Fault {
        Fault::new(Reason::WrongKeyLifecycleState, message)
    }
    /// The keystore failed under us; the client may retry.
    pub fn internal(message: impl Into<String>) -> Fault {
        Fault::new(Reason::GeneralFailure, message)
    }
}
