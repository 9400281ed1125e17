//! The gRPC side: AgentService and ConsoleService over the state core, the peer's identity from its certificate, and the mapping of the core's errors and records to gRPC. The only code of the controller (with main.rs and the bench) that knows tonic.

pub mod agents;
pub mod console;
mod convert;
mod peer;

pub use agents::Agents;
pub use console::Console;

use tonic::Status;

impl From<crate::Error> for Status {
    fn from(e: crate::Error) -> Status {
        use crate::Error as E;
        match e {
            E::NotFound(m) => Status::not_found(m),
            E::Invalid(m) => Status::invalid_argument(m),
            E::Precondition(m) => Status::failed_precondition(m),
            E::PermissionDenied(m) => Status::permission_denied(m),
            e @ E::Catalog { retry: true, .. } => Status::unavailable(e.to_string()),
            e => Status::internal(e.to_string()),
        }
    }
}
