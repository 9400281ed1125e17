//! What the night's probes print, read: replication state, users signed on, the close finished. Text in, values out.

/// A replication probe's "backlog=N latency=S [apply=STATE]".
#[derive(Debug, Clone, PartialEq)]
pub struct Replication {
    pub backlog: u64,
    pub latency: u64,
    /// What the probe said of apply, if it did ("active", "suspended", ...).
    pub apply: Option<String>,
}

impl Replication {
    /// Apply is not running, by the probe's own word.
    pub fn apply_stopped(&self) -> bool {
        self.apply
            .as_deref()
            .is_some_and(|a| !matches!(a, "active" | "running" | "started"))
    }
}

/// Reads "backlog=N latency=S" (and "apply=STATE" if present).
pub fn replication(output: &str) -> Option<Replication> {
    let word = |k: &str| {
        output
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
    };
    let num = |k: &str| word(k)?.parse::<u64>().ok();
    Some(Replication {
        backlog: num("backlog")?,
        latency: num("latency")?,
        apply: word("apply").map(str::to_string),
    })
}

/// The quiesce probe's count of users still signed on.
pub fn users(output: &str) -> Option<u64> {
    output.trim().parse().ok()
}

/// The close probe says the business close has finished.
pub fn close_finished(output: &str) -> bool {
    output.trim() == "finished"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_is_read_or_refused() {
        let r = replication("apply=active backlog=12 latency=3\n").unwrap();
        assert_eq!((r.backlog, r.latency), (12, 3));
        assert!(!r.apply_stopped());
        assert!(replication("apply=suspended backlog=0 latency=0")
            .unwrap()
            .apply_stopped());
        assert!(!replication("backlog=0 latency=0").unwrap().apply_stopped());
        assert_eq!(replication("backlog=x latency=3"), None);
        assert_eq!(replication(""), None);
        assert_eq!(users(" 3\n"), Some(3));
        assert_eq!(users("three"), None);
        assert!(close_finished("finished\n"));
        assert!(!close_finished("running"));
    }
}
