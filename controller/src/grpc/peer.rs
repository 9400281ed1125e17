//! The calling peer: its client certificate (subject CN, SHA-256 fingerprint), who that is to the controller, and the check that it may call the method.

use tonic::{Request, Status};

use crate::access::{Identity, Role};
use crate::state::State;

/// Who sent `req`, by its client certificate.
fn identity<T>(state: &State, req: &Request<T>) -> Result<Identity, Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let der = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let fingerprint: String = ring::digest::digest(&ring::digest::SHA256, der.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|_| Status::unauthenticated("unreadable client certificate"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok());
    Ok(state.identify(cn, &fingerprint))
}

/// The operator calling console method `method`, if it holds `need`;
/// else PERMISSION_DENIED naming it and the role, and an event.
pub fn console<T>(
    state: &State,
    req: &Request<T>,
    method: &str,
    need: Role,
) -> Result<String, Status> {
    let id = identity(state, req)?;
    id.allows(method, need)
        .map_err(|why| state.refused(why).into())
}

/// The LPAR whose agent calls agent method `method`; anything else is refused.
pub fn agent<T>(state: &State, req: &Request<T>, method: &str) -> Result<String, Status> {
    let id = identity(state, req)?;
    id.agent(method).map_err(|why| state.refused(why).into())
}
