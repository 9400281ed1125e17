//! Times as an operator reads and types them: in the controller's time zone (or `TZ`, or UTC with `--utc`), with the offset shown.

use std::sync::OnceLock;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};

/// The zone times are shown and read in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    Utc,
    Tz(chrono_tz::Tz),
}

static ZONE: OnceLock<Zone> = OnceLock::new();

/// Sets the zone for this run (first call wins).
pub fn set_zone(z: Zone) {
    let _ = ZONE.set(z);
}

pub fn zone() -> Zone {
    *ZONE.get().unwrap_or(&Zone::Utc)
}

/// `TZ` as an IANA name, if it is one (":Europe/Madrid" too).
pub fn zone_from_env() -> Option<Zone> {
    let tz = std::env::var("TZ").ok()?;
    let tz = tz.trim_start_matches(':');
    if tz == "UTC" || tz == "Etc/UTC" {
        return Some(Zone::Utc);
    }
    tz.parse().ok().map(Zone::Tz)
}

/// A zone by IANA name (the controller's `time_zone`).
pub fn zone_named(name: &str) -> Zone {
    match name {
        "UTC" | "Etc/UTC" | "" => Zone::Utc,
        n => n.parse().map(Zone::Tz).unwrap_or(Zone::Utc),
    }
}

/// Seconds since 1970 as a local time with its offset ("-" for 0).
pub fn when(t: i64) -> String {
    when_in(zone(), t)
}

pub fn when_in(z: Zone, t: i64) -> String {
    if t == 0 {
        return "-".into();
    }
    let Some(u) = Utc.timestamp_opt(t, 0).single() else {
        return t.to_string();
    };
    match z {
        Zone::Utc => u.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        Zone::Tz(tz) => u
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S%:z")
            .to_string(),
    }
}

/// A time an operator typed: seconds since 1970; RFC 3339 with `Z` or an
/// offset; or a local time "YYYY-MM-DD HH:MM[:SS]" (or with `T`), or a
/// date alone (its midnight), in `z`.
/// A local time the clock skips (spring forward) is refused; one it
/// repeats (fall back) is the first of the two.
pub fn parse_time(s: &str, z: Zone) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    let bad = || {
        format!(
            "{s:?}: give a local time YYYY-MM-DD[ HH:MM[:SS]] ({}), an RFC 3339 time (…Z or …+01:00) or seconds since 1970",
            match z {
                Zone::Utc => "UTC".to_string(),
                Zone::Tz(tz) => tz.name().to_string(),
            }
        )
    };
    let naive = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    // A date alone: its midnight.
    .or_else(|| {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    })
    .ok_or_else(bad)?;
    let local = match z {
        Zone::Utc => return Ok(naive.and_utc().timestamp()),
        Zone::Tz(tz) => tz.from_local_datetime(&naive),
    };
    match local {
        LocalResult::Single(t) => Ok(t.timestamp()),
        LocalResult::Ambiguous(first, _) => Ok(first.timestamp()),
        LocalResult::None => Err(format!(
            "{s:?} does not exist in {} (the clocks skip it)",
            match z {
                Zone::Tz(tz) => tz.name().to_string(),
                Zone::Utc => "UTC".into(),
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_and_show_in_the_zone_with_their_offset() {
        let madrid = Zone::Tz("Europe/Madrid".parse().unwrap());
        // 2026-11-24 19:10 UTC is 20:10 in Madrid (CET, +01:00).
        let t = 1_795_547_400;
        assert_eq!(when_in(madrid, t), "2026-11-24 20:10:00+01:00");
        assert_eq!(when_in(Zone::Utc, t), "2026-11-24 19:10:00Z");
        assert_eq!(when_in(madrid, 0), "-");
        for s in [
            "2026-11-24 20:10",
            "2026-11-24T20:10:00",
            "2026-11-24T19:10:00Z",
            "2026-11-24T20:10:00+01:00",
            "1795547400",
        ] {
            assert_eq!(parse_time(s, madrid), Ok(t), "{s}");
        }
        assert_eq!(parse_time("2026-11-24 19:10", Zone::Utc), Ok(t));
        // Spring forward: 02:30 on 2026-03-29 does not exist in Madrid.
        assert!(parse_time("2026-03-29 02:30", madrid)
            .unwrap_err()
            .contains("does not exist"));
        // Fall back: 02:30 on 2026-10-25 happens twice; the first (CEST, +02:00).
        let first = parse_time("2026-10-25 02:30", madrid).unwrap();
        assert_eq!(when_in(madrid, first), "2026-10-25 02:30:00+02:00");
        assert!(parse_time("yesterday", madrid)
            .unwrap_err()
            .contains("Europe/Madrid"));
    }

    #[test]
    fn times_read_as_they_are_printed() {
        let madrid = Zone::Tz("Europe/Madrid".parse().unwrap());
        assert!(parse_time("2026-13-01 00:00", madrid).is_err());
        for z in [Zone::Utc, madrid] {
            for t in [1i64, 1_795_546_800, 951_782_400, 4_102_444_799] {
                let shown = when_in(z, t);
                let typed = shown.replacen(' ', "T", 1);
                assert_eq!(parse_time(&typed, z), Ok(t), "{shown}");
            }
        }
    }
}
