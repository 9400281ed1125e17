//! Media movement (BRMS move policies): where each cartridge should go next and when, from its place, its policy and whether its save sets have expired.
//!
//! Pure: no catalog, no clock, no I/O. A volume is at home (`HOME`: in the
//! library that wrote it) or at a named location (a vault); a move policy is
//! the list of locations a volume visits after it is written, each for some
//! days, before it comes home. A volume whose save sets have all expired comes
//! home at once, wherever it is. A move is started (the cartridge leaves the
//! library through its import/export port, or is sent from the vault) and then
//! confirmed on arrival, so the catalog never claims a cartridge is somewhere
//! it has not been seen to arrive.

use serde::{Deserialize, Serialize};

/// The location of a cartridge in its own library.
pub const HOME: &str = "*HOME";

/// A cartridge as the controller knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub volser: String,
    pub agent: String,
    pub library: String,
    /// The site of the LPAR that wrote it.
    pub site: String,
    pub first_written: i64,
    pub last_written: i64,
    /// Save sets with data on it.
    pub save_sets: Vec<String>,
    /// The move policy of the last save set written to it ("" none).
    pub move_policy: String,
    /// Where it is: `HOME` or a location name.
    pub location: String,
    /// Since when it has been there.
    pub since: i64,
    /// Where it is on its way to ("" when not moving).
    #[serde(default)]
    pub in_transit_to: String,
    /// The job taking it out of its library, while that runs.
    #[serde(default)]
    pub move_job: String,
    /// A move ordered outside its policy: written at the contingency site,
    /// it must be carried to the main site ("" none; cleared on arrival).
    #[serde(default)]
    pub carry_to: String,
    /// Where a carried volume stays (outside its policy) until it expires.
    #[serde(default)]
    pub kept_at: String,
}

/// A move policy: the places a volume goes, in order, after it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy<'a> {
    /// (location, days there).
    pub steps: &'a [(String, u32)],
}

/// Where a volume is due to go next and from when.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub to: String,
    pub at: i64,
    pub why: &'static str,
}

/// The next move of `v`, if any; `expired`: all its save sets have expired.
pub fn next_move(v: &VolumeRecord, policy: Option<&Policy>, expired: bool) -> Option<Due> {
    if !v.in_transit_to.is_empty() {
        return None;
    }
    if v.location == HOME && !v.carry_to.is_empty() {
        return Some(Due {
            to: v.carry_to.clone(),
            at: v.last_written,
            why: "written at the contingency site for the main site",
        });
    }
    if v.location == HOME {
        let p = policy?;
        let (first, _) = p.steps.first()?;
        // Written and kept: leaves with the next move run; expired ones stay home.
        return (!expired).then(|| Due {
            to: first.clone(),
            at: v.last_written,
            why: "written; the move policy sends it off site",
        });
    }
    if expired {
        return Some(Due {
            to: HOME.into(),
            at: v.since,
            why: "every save set on it has expired: back to the library",
        });
    }
    if v.location == v.kept_at {
        return None;
    }
    let Some(p) = policy else {
        // No policy (any more): it belongs at home.
        return Some(Due {
            to: HOME.into(),
            at: v.since,
            why: "no move policy keeps it here",
        });
    };
    let i = p.steps.iter().position(|(l, _)| *l == v.location);
    let Some(i) = i else {
        return Some(Due {
            to: HOME.into(),
            at: v.since,
            why: "its location is not in its move policy",
        });
    };
    let at = v.since + 86_400 * i64::from(p.steps[i].1);
    let to = p
        .steps
        .get(i + 1)
        .map(|(l, _)| l.clone())
        .unwrap_or_else(|| HOME.into());
    Some(Due {
        to,
        at,
        why: "its days at this location are over",
    })
}

/// A location as people say it.
pub fn place(v: &VolumeRecord, location: &str) -> String {
    if location == HOME {
        format!("library {} of {}", v.library, v.agent)
    } else {
        location.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(location: &str, since: i64) -> VolumeRecord {
        VolumeRecord {
            volser: "PR0001".into(),
            agent: "PROD1".into(),
            library: "default".into(),
            site: "main".into(),
            first_written: 100,
            last_written: 100,
            save_sets: vec!["a".into()],
            move_policy: "P".into(),
            location: location.into(),
            since,
            in_transit_to: String::new(),
            move_job: String::new(),
            carry_to: String::new(),
            kept_at: String::new(),
        }
    }

    #[test]
    fn a_volume_goes_round_its_policy_and_comes_home_early_when_expired() {
        let steps = vec![("VAULT".to_string(), 28), ("BUNKER".to_string(), 7)];
        let p = Policy { steps: &steps };
        let d = next_move(&vol(HOME, 100), Some(&p), false).unwrap();
        assert_eq!((d.to.as_str(), d.at), ("VAULT", 100));
        assert_eq!(next_move(&vol(HOME, 100), Some(&p), true), None);
        assert_eq!(next_move(&vol(HOME, 100), None, false), None);
        let d = next_move(&vol("VAULT", 1000), Some(&p), false).unwrap();
        assert_eq!((d.to.as_str(), d.at), ("BUNKER", 1000 + 28 * 86_400));
        let d = next_move(&vol("BUNKER", 5000), Some(&p), false).unwrap();
        assert_eq!((d.to.as_str(), d.at), (HOME, 5000 + 7 * 86_400));
        let d = next_move(&vol("VAULT", 1000), Some(&p), true).unwrap();
        assert_eq!((d.to.as_str(), d.at), (HOME, 1000));
        let mut moving = vol("VAULT", 1000);
        moving.in_transit_to = HOME.into();
        assert_eq!(next_move(&moving, Some(&p), true), None);
        let d = next_move(&vol("ELSEWHERE", 9), Some(&p), false).unwrap();
        assert_eq!((d.to.as_str(), d.at), (HOME, 9));
        // Written at the contingency site: carried to the main site, kept there until it expires.
        let mut c = vol(HOME, 100);
        c.carry_to = "SITE main".into();
        assert_eq!(next_move(&c, None, false).unwrap().to, "SITE main");
        c.location = "SITE main".into();
        c.carry_to.clear();
        c.kept_at = "SITE main".into();
        assert_eq!(next_move(&c, Some(&p), false), None);
        assert_eq!(next_move(&c, Some(&p), true).unwrap().to, HOME);
    }
}
