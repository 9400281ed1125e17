//! Who may do what: the operators named in the configuration (by certificate CN or fingerprint) and their roles, agents named by their LPAR, and every other identity refused.
//!
//! No gRPC here: grpc/ reads the peer's certificate and asks [`identify`]
//! and [`Identity::allows`]; the answer names the identity and the role needed.

use serde::Deserialize;

/// A console role. `admin` holds every other; `operator`, `approver` and
/// `auditor` each hold `viewer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read only: agents, jobs, the night, events, save sets, volumes, searches.
    Viewer,
    /// Run and cancel jobs, signal the close, acknowledge the night, move media.
    Operator,
    /// Approves what needs a second person (restore requests).
    Approver,
    /// Reads the audit trail and reports.
    Auditor,
    /// Everything, and switching roles between LPARs.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    /// Whether holding `self` grants `need`.
    pub fn grants(self, need: Role) -> bool {
        self == need || self == Role::Admin || need == Role::Viewer
    }
}

/// `[[operator]]` in the configuration: a person (or a script) at the
/// console, named by certificate subject CN or by the SHA-256 fingerprint of
/// the certificate (either one, or both: then both must match).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub name: String,
    pub cn: Option<String>,
    /// SHA-256 of the certificate (DER), hex, colons and case ignored.
    pub fingerprint: Option<String>,
    pub roles: Vec<Role>,
}

impl Operator {
    fn matches(&self, cn: Option<&str>, fingerprint: &str) -> bool {
        let by_cn = self.cn.as_deref().map(|c| Some(c) == cn);
        let by_fp = self
            .fingerprint
            .as_deref()
            .map(|f| normalize_fingerprint(f) == fingerprint);
        match (by_cn, by_fp) {
            (None, None) => false,
            (a, b) => a.unwrap_or(true) && b.unwrap_or(true),
        }
    }
}

/// A fingerprint as compared: lower-case hex, no separators or prefix.
pub fn normalize_fingerprint(f: &str) -> String {
    let f = f.trim();
    let f = f
        .strip_prefix("sha256:")
        .or_else(|| f.strip_prefix("SHA256:"))
        .unwrap_or(f);
    f.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Who a certificate is to this controller.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    /// The agent of this LPAR (its certificate's CN is the LPAR's name).
    Agent(String),
    /// An operator of the configuration, with the roles it holds.
    Console { name: String, roles: Vec<Role> },
    /// Signed by the CA but named nowhere in the configuration.
    Unknown { cn: String, fingerprint: String },
}

/// Who the certificate with subject CN `cn` and SHA-256 `fingerprint`
/// (lower-case hex) is. An operator entry wins over an LPAR of the same CN,
/// so a console certificate never acts as an agent (the configuration
/// refuses an operator CN that is an LPAR's name).
pub fn identify(
    operators: &[Operator],
    lpars: &[crate::config::Lpar],
    cn: Option<&str>,
    fingerprint: &str,
) -> Identity {
    if let Some(o) = operators.iter().find(|o| o.matches(cn, fingerprint)) {
        return Identity::Console {
            name: o.name.clone(),
            roles: o.roles.clone(),
        };
    }
    if let Some(l) = lpars.iter().find(|l| Some(l.name.as_str()) == cn) {
        return Identity::Agent(l.name.clone());
    }
    Identity::Unknown {
        cn: cn.unwrap_or("").to_string(),
        fingerprint: fingerprint.to_string(),
    }
}

impl Identity {
    /// How the identity is named in messages, events and job records.
    pub fn who(&self) -> String {
        match self {
            Identity::Agent(l) => l.clone(),
            Identity::Console { name, .. } => name.clone(),
            Identity::Unknown { cn, .. } => cn.clone(),
        }
    }

    /// Whether a console method needing `need` may be called; Err says why not.
    pub fn allows(&self, method: &str, need: Role) -> Result<String, String> {
        match self {
            Identity::Console { name, roles } if roles.iter().any(|r| r.grants(need)) => {
                Ok(name.clone())
            }
            Identity::Console { name, roles } => Err(format!(
                "operator {name} (roles: {}) may not call {method}: it needs the {} role",
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                need.as_str()
            )),
            Identity::Agent(l) => Err(format!(
                "{l} is an agent's certificate: it may not call the console method {method} (which needs the {} role of an operator)",
                need.as_str()
            )),
            Identity::Unknown { cn, fingerprint } => Err(format!(
                "certificate CN={cn:?} (sha256 {fingerprint}) is no operator of this controller: {method} needs the {} role",
                need.as_str()
            )),
        }
    }

    /// The LPAR an agent method may act for; Err says why not.
    pub fn agent(&self, method: &str) -> Result<String, String> {
        match self {
            Identity::Agent(l) => Ok(l.clone()),
            Identity::Console { name, .. } => Err(format!(
                "operator {name}'s certificate may not act as an agent ({method})"
            )),
            Identity::Unknown { cn, .. } => Err(format!(
                "certificate CN={cn:?} is neither an LPAR of this controller's configuration nor an operator: it may not call {method}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lpar(name: &str) -> crate::config::Lpar {
        crate::config::Lpar {
            name: name.into(),
            site: String::new(),
            role: "production".into(),
            ssh: None,
            save_library: None,
            watches: vec![],
        }
    }

    #[test]
    fn operators_agents_and_strangers_get_what_their_roles_allow() {
        let ops = vec![
            Operator {
                name: "ana".into(),
                cn: Some("ana".into()),
                fingerprint: None,
                roles: vec![Role::Viewer],
            },
            Operator {
                name: "ops".into(),
                cn: None,
                fingerprint: Some("SHA256:AB:cd:01".into()),
                roles: vec![Role::Operator],
            },
            Operator {
                name: "root".into(),
                cn: Some("root".into()),
                fingerprint: Some("ff".into()),
                roles: vec![Role::Admin],
            },
        ];
        let lpars = [lpar("PROD1")];
        let id = |cn: &str, fp: &str| identify(&ops, &lpars, Some(cn), fp);
        assert_eq!(id("PROD1", "00"), Identity::Agent("PROD1".into()));
        assert!(id("PROD1", "00")
            .allows("SignalClose", Role::Operator)
            .unwrap_err()
            .contains("PROD1 is an agent's certificate"));
        assert!(id("ana", "00").allows("ListJobs", Role::Viewer).is_ok());
        let e = id("ana", "00")
            .allows("RunControlGroup", Role::Operator)
            .unwrap_err();
        assert!(
            e.contains("ana") && e.contains("needs the operator role"),
            "{e}"
        );
        assert!(id("ana", "00").agent("Register").is_err());
        // By fingerprint, whatever the CN (even an LPAR's: it is a console then).
        assert_eq!(id("PROD1", "abcd01").who(), "ops");
        assert!(id("PROD1", "abcd01").agent("Register").is_err());
        assert!(id("x", "abcd01")
            .allows("CancelJob", Role::Operator)
            .is_ok());
        assert!(id("x", "abcd01").allows("SwitchRole", Role::Admin).is_err());
        // Both named: both must match.
        assert!(matches!(id("root", "00"), Identity::Unknown { .. }));
        assert!(id("root", "ff").allows("SwitchRole", Role::Admin).is_ok());
        let e = id("mallory", "12")
            .allows("ListAgents", Role::Viewer)
            .unwrap_err();
        assert!(e.contains("mallory") && e.contains("no operator"), "{e}");
        assert!(Role::Admin.grants(Role::Approver));
        assert!(Role::Auditor.grants(Role::Viewer));
        assert!(!Role::Approver.grants(Role::Operator));
    }
}
