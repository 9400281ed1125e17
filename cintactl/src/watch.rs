//! `watch`: a running job followed live, one line redrawn in place on a terminal (fitted to its width), a line per change otherwise, JSON lines with `--json`.

use std::time::{Duration, Instant};

use anyhow::Result;
use cinta_proto::v1 as pb;
use pb::console_service_client::ConsoleServiceClient;
use tonic::transport::Channel;

use crate::{human, job_json};

/// The terminal's width in columns, if standard output is one.
fn terminal_width() -> Option<usize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills a winsize we own, on standard output's fd.
    let r = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

/// One line of a running job: bar, bytes, rate, ETA, entry; `rate` in
/// bytes/s (measured here); at most `width` columns. A job whose size is
/// not known (a library's save file) shows bytes and rate, no bar.
pub fn progress_line(j: &pb::Job, rate: f64, width: usize) -> String {
    let known = j.bytes_total > 0;
    let mut tail = format!("  {}", human(j.bytes as f64));
    if known {
        tail.push_str(&format!(" of {}", human(j.bytes_total as f64)));
    } else if j.state == "running" {
        tail.push_str(" (size not known)");
    }
    if rate > 0.0 {
        tail.push_str(&format!("  {}/s", human(rate)));
        if known && j.bytes_total > j.bytes {
            let left = ((j.bytes_total - j.bytes) as f64 / rate) as u64;
            tail.push_str(&format!("  ETA {}:{:02}", left / 60, left % 60));
        }
    }
    tail.push_str(&format!(
        "  entry {}/{}",
        (j.entries_done + u32::from(!j.current.is_empty())).min(j.entries_total),
        j.entries_total
    ));
    if !j.current.is_empty() {
        tail.push_str(&format!(": {} ({} objects)", j.current, j.objects));
    }
    let head = format!("{} {}", j.id, j.state);
    let bar = if known {
        let frac = (j.bytes as f64 / j.bytes_total as f64).min(1.0);
        // What the width leaves for the bar, between 10 and 30 cells.
        let room = width.saturating_sub(head.chars().count() + tail.chars().count() + 8);
        let cells = room.clamp(10, 30);
        let filled = (frac * cells as f64).round() as usize;
        format!(
            " [{}{}] {:>3.0}%",
            "#".repeat(filled),
            "-".repeat(cells - filled),
            frac * 100.0
        )
    } else {
        String::new()
    };
    let line = format!("{head}{bar}{tail}");
    if line.chars().count() > width {
        let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        line
    }
}

/// Follows job `id` until it ends; returns it as it ended.
pub async fn watch(c: &mut ConsoleServiceClient<Channel>, id: &str, json: bool) -> Result<pb::Job> {
    use std::io::{IsTerminal, Write};
    let tty = !json && std::io::stdout().is_terminal();
    let mut last: Option<pb::Job> = None;
    let mut printed = Instant::now() - Duration::from_secs(60);
    // Rate from what this console saw: (when, bytes) at the first sighting while running.
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let j = c
            .get_job(pb::GetJobRequest { id: id.to_string() })
            .await?
            .into_inner();
        let ended = !matches!(j.state.as_str(), "queued" | "running");
        if j.state == "running" && first.is_none() {
            first = Some((Instant::now(), j.bytes));
        }
        let rate = first
            .map(|(t, b)| {
                let s = t.elapsed().as_secs_f64();
                if s > 0.5 {
                    j.bytes.saturating_sub(b) as f64 / s
                } else {
                    0.0
                }
            })
            .unwrap_or(0.0);
        let changed = last.as_ref() != Some(&j);
        if json {
            if changed {
                println!("{}", serde_json::to_string(&job_json(&j))?);
            }
        } else if tty {
            // Fitted to the width every time: a resized terminal redraws in place.
            let width = terminal_width().unwrap_or(80);
            print!(
                "\r{}\x1b[K",
                progress_line(&j, rate, width.saturating_sub(1))
            );
            std::io::stdout().flush()?;
        } else if ended
            || last
                .as_ref()
                .map(|l| (&l.state, l.entries_done, &l.current))
                != Some((&j.state, j.entries_done, &j.current))
            || printed.elapsed() >= Duration::from_secs(10)
        {
            println!("{}", progress_line(&j, rate, 200));
            printed = Instant::now();
        }
        if ended {
            if tty {
                println!();
            }
            return Ok(j);
        }
        last = Some(j);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(bytes: u64, total: u64) -> pb::Job {
        pb::Job {
            id: "J1".into(),
            state: "running".into(),
            bytes,
            bytes_total: total,
            entries_total: 2,
            current: "library PAYLIB".into(),
            objects: 1,
            ..Default::default()
        }
    }

    #[test]
    fn a_progress_line_fits_its_width_and_claims_no_size_it_does_not_know() {
        let l = progress_line(&job(50 << 20, 100 << 20), 1e6, 200);
        assert!(
            l.contains("50%") && l.contains("of 100.0 MiB") && l.contains("ETA"),
            "{l}"
        );
        for w in [40, 60, 79, 120] {
            let l = progress_line(&job(50 << 20, 100 << 20), 1e6, w);
            assert!(l.chars().count() <= w, "{w}: {l}");
        }
        let l = progress_line(&job(5 << 20, 0), 1e6, 200);
        assert!(
            !l.contains('%') && l.contains("5.0 MiB (size not known)"),
            "{l}"
        );
        assert!(l.contains("/s") && !l.contains("ETA"), "{l}");
    }
}
