//! Every transition of the night machine, with plans, records and observations made by hand.

use super::*;
use crate::config::{Contingency, NightPlan};

fn plan() -> NightPlan {
    NightPlan {
        pre_close: "PRE".into(),
        pre_close_at: "30 20 * * *".into(),
        post_close: "POST".into(),
        deadline: "0 23 * * *".into(),
        grace_minutes: 0,
        close_probe: None,
        close_probe_every_minutes: 5,
        quiesce_probe: Some("users".into()),
        quiesce_grace_minutes: 10,
        force_signoff: Some("signoff".into()),
        contingency: Some(Contingency {
            replication_probe: "replication".into(),
            max_backlog: 100,
            max_latency_seconds: 60,
            suspend: "end-apply".into(),
            resume: "start-apply".into(),
            save_attempts: 2,
        }),
    }
}

const T: i64 = 1_000_000;

fn night(state: Step) -> Night {
    let mut n = Night::new("2026-11-24".into(), T + 10_000);
    n.state = state;
    n.pre_close_job = "JPRE".into();
    n.step_job = "JSTEP".into();
    n.contingency_job = "JCONT".into();
    n.post_close_job = "JPOST".into();
    n
}

fn ended(state: &str, output: &str) -> Option<Ended> {
    Some(Ended {
        id: "J1".into(),
        state: state.into(),
        output: output.into(),
        message: if state == "succeeded" {
            String::new()
        } else {
            format!("it {state}")
        },
        warnings: 0,
    })
}

fn obs(e: Option<Ended>) -> Observed {
    Observed {
        now: T,
        ended: e,
        contingency: "CONT1".into(),
        contingency_up: true,
        contingency_volumes: vec![],
    }
}

fn run(n: &Night, o: &Observed) -> (Night, Vec<Action>) {
    step(n, &plan(), o)
}

fn probes(a: &[Action]) -> Vec<(Role, &'static str, String)> {
    a.iter()
        .filter_map(|a| match a {
            Action::Probe {
                role,
                label,
                command,
                ..
            } => Some((*role, *label, command.clone())),
            _ => None,
        })
        .collect()
}

fn saves(a: &[Action]) -> Vec<(Slot, String, Option<Role>)> {
    a.iter()
        .filter_map(|a| match a {
            Action::Save { slot, group, on } => Some((*slot, group.clone(), *on)),
            _ => None,
        })
        .collect()
}

fn events(a: &[Action]) -> Vec<&'static str> {
    a.iter()
        .filter_map(|a| match a {
            Action::Event { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect()
}

fn said(n: &Night, text: &str) -> bool {
    n.timeline.iter().any(|(_, t)| t.contains(text))
}

#[test]
fn a_night_starts_with_its_pre_close_save() {
    let (n, a) = start("2026-11-24".into(), T, &plan());
    assert_eq!(n.state, Step::PreClose);
    assert_eq!(saves(&a), [(Slot::PreClose, "PRE".to_string(), None)]);
    assert_eq!(events(&a), ["night.started"]);
}

#[test]
fn pre_close_waits_for_its_save_then_opens_the_close_window() {
    let n = night(Step::PreClose);
    let (m, a) = run(&n, &obs(None));
    assert_eq!((m, a), (n.clone(), vec![]), "running: nothing");
    let (m, a) = run(&n, &obs(ended("succeeded", "")));
    assert_eq!(m.state, Step::CloseWindow);
    assert!(!m.escalated && a.is_empty());
    assert!(said(&m, "pre-close save succeeded; close window open"));
    let (m, a) = run(&n, &obs(ended("failed", "")));
    assert_eq!(m.state, Step::CloseWindow);
    assert!(m.escalated);
    assert_eq!(events(&a), ["night.escalated"]);
}

#[test]
fn the_close_window_waits_for_the_close_then_checks_users_or_saves() {
    let mut n = night(Step::CloseWindow);
    n.step_job.clear();
    let (m, a) = run(&n, &obs(None));
    assert_eq!(
        (m, a.len()),
        (n.clone(), 0),
        "no close probe: the operator signals"
    );
    n.close_finished = Some(T);
    let (m, a) = run(&n, &obs(None));
    assert_eq!(m.state, Step::QuiesceCheck);
    assert_eq!(
        probes(&a),
        [(Role::Production, "quiesce-check", "users".to_string())]
    );
    let mut p = plan();
    p.quiesce_probe = None;
    let (m, a) = step(&n, &p, &obs(None));
    assert_eq!(m.state, Step::PostClose);
    assert_eq!(saves(&a), [(Slot::PostClose, "POST".to_string(), None)]);
}

#[test]
fn the_close_probe_runs_every_few_minutes_until_it_says_finished() {
    let mut p = plan();
    p.close_probe = Some("close".into());
    let mut n = night(Step::CloseWindow);
    n.step_job.clear();
    let (m, a) = step(&n, &p, &obs(None));
    assert_eq!(
        probes(&a),
        [(Role::Production, "close-probe", "close".to_string())]
    );
    assert_eq!(m.wait_until, T + 300);
    let mut waiting = m.clone();
    waiting.step_job.clear();
    let (_, a) = step(&waiting, &p, &obs(None));
    assert!(a.is_empty(), "not due again yet");
    let mut asked = m.clone();
    asked.step_job = "JP".into();
    let (m2, a) = step(&asked, &p, &obs(ended("succeeded", "running\n")));
    assert!(m2.close_finished.is_none() && m2.step_job.is_empty() && a.is_empty());
    let (m2, a) = step(&asked, &p, &obs(ended("succeeded", "finished\n")));
    assert_eq!(m2.close_finished, Some(T));
    assert_eq!(m2.state, Step::QuiesceCheck, "on at once");
    assert_eq!(events(&a), ["close.signal"]);
}

#[test]
fn quiet_production_gets_its_post_close_save_and_users_get_a_grace_period() {
    let n = night(Step::QuiesceCheck);
    let (m, a) = run(&n, &obs(ended("succeeded", "0\n")));
    assert_eq!(m.state, Step::PostClose);
    assert!(said(&m, "production is quiet"));
    assert_eq!(saves(&a).len(), 1);
    let (m, a) = run(&n, &obs(ended("succeeded", "3\n")));
    assert_eq!(m.state, Step::QuiesceWait);
    assert_eq!(m.wait_until, T + 600);
    assert!(said(&m, "3 users still signed on; waiting 10 min") && a.is_empty());
    let (m, _) = run(&n, &obs(ended("failed", "")));
    assert_eq!(m.state, Step::QuiesceWait);
    assert!(said(&m, "the quiesce probe did not answer"));
}

#[test]
fn after_the_grace_period_production_is_asked_again() {
    let mut n = night(Step::QuiesceWait);
    n.wait_until = T + 1;
    assert!(run(&n, &obs(None)).1.is_empty());
    n.wait_until = T;
    let (m, a) = run(&n, &obs(None));
    assert_eq!(m.state, Step::QuiesceRecheck);
    assert_eq!(probes(&a)[0].1, "quiesce-recheck");
}

#[test]
fn users_still_on_are_signed_off_by_policy_then_the_night_falls_back() {
    let n = night(Step::QuiesceRecheck);
    let (m, a) = run(&n, &obs(ended("succeeded", "2")));
    assert_eq!(m.state, Step::Signoff);
    assert_eq!(events(&a), ["signoff.forced"]);
    assert_eq!(probes(&a)[0].2, "signoff");
    let (m, a) = run(
        &night(Step::Signoff),
        &obs(ended("succeeded", "ENDJOB done")),
    );
    assert_eq!(m.state, Step::QuiesceFinal);
    assert!(said(&m, "sign-off ran: ENDJOB done"));
    assert_eq!(probes(&a)[0].1, "quiesce-final");
    let (m, a) = run(&night(Step::QuiesceFinal), &obs(ended("succeeded", "2")));
    assert_eq!(m.state, Step::ReplicationCheck);
    assert!(said(&m, "FALLBACK to contingency"));
    assert_eq!(events(&a), ["fallback.taken"]);
    assert_eq!(
        probes(&a)[0],
        (
            Role::Contingency,
            "replication-check",
            "replication".to_string()
        )
    );
    // Without a sign-off policy the recheck falls back at once.
    let mut p = plan();
    p.force_signoff = None;
    let (m, _) = step(&n, &p, &obs(ended("succeeded", "2")));
    assert_eq!(m.state, Step::ReplicationCheck);
    // Without a contingency LPAR the night fails.
    p.contingency = None;
    let (m, a) = step(&n, &p, &obs(ended("succeeded", "2")));
    assert_eq!((m.state, m.outcome), (Step::Done, Some(Outcome::Failed)));
    assert!(m.escalated);
    assert_eq!(
        events(&a),
        [
            "fallback.taken",
            "night.escalated",
            "night.failed",
            "night.done"
        ]
    );
}

#[test]
fn only_a_current_replica_is_suspended_and_saved() {
    let n = night(Step::ReplicationCheck);
    let (m, a) = run(
        &n,
        &obs(ended("succeeded", "apply=active backlog=7 latency=2")),
    );
    assert_eq!(m.state, Step::Suspend);
    assert!(said(&m, "replication healthy (backlog 7, latency 2s)"));
    assert_eq!(
        probes(&a)[0],
        (Role::Contingency, "suspend", "end-apply".to_string())
    );
    let (m, a) = run(&n, &obs(ended("succeeded", "backlog=5000 latency=0")));
    assert_eq!((m.state, m.outcome), (Step::Done, Some(Outcome::Failed)));
    assert!(said(
        &m,
        "replication unhealthy (backlog 5000 > 100 allowed); the contingency"
    ));
    let (m, _) = run(&n, &obs(ended("succeeded", "backlog=1 latency=90")));
    assert!(
        said(&m, "replication unhealthy (latency 90s > 60s allowed); the"),
        "{:?}",
        m.timeline
    );
    assert!(probes(&a).is_empty() && saves(&a).is_empty());
    let (m, _) = run(&n, &obs(ended("failed", "")));
    assert!(said(&m, "the replication probe did not answer"));
    assert_eq!(m.state, Step::Done);
}

#[test]
fn apply_suspended_at_a_recovery_point_is_saved_and_a_failed_suspend_resumes() {
    let n = night(Step::Suspend);
    let (m, a) = run(&n, &obs(ended("succeeded", "recovery point: seq 1000\n")));
    assert_eq!(m.state, Step::ContingencySave);
    assert_eq!(m.recovery_point, "recovery point: seq 1000");
    assert!(m.apply_suspended && m.attempts == 1);
    assert_eq!(
        saves(&a),
        [(
            Slot::Contingency,
            "POST".to_string(),
            Some(Role::Contingency)
        )]
    );
    let (m, a) = run(&n, &obs(ended("failed", "")));
    assert_eq!(m.state, Step::Resume);
    assert!(m.escalated && !m.saved);
    assert_eq!(probes(&a)[0].1, "resume");
    assert_eq!(events(&a), ["night.escalated"]);
}

#[test]
fn a_failed_contingency_save_is_retried_while_apply_is_suspended() {
    let mut n = night(Step::ContingencySave);
    n.attempts = 1;
    n.apply_suspended = true;
    let (m, a) = run(&n, &obs(ended("succeeded", "")));
    assert_eq!(m.state, Step::Resume);
    assert!(m.saved && !m.escalated);
    assert_eq!(probes(&a)[0].1, "resume");
    // Failed, the agent up: after its backoff, again.
    let (m, a) = run(&n, &obs(ended("failed", "")));
    assert!(m.retry_pending && m.escalated && m.state == Step::ContingencySave);
    assert_eq!(m.wait_until, T + 60);
    assert_eq!(events(&a), ["night.escalated"]);
    assert!(
        run(&m, &obs(ended("failed", ""))).1.is_empty(),
        "backoff not over"
    );
    let mut later = obs(ended("failed", ""));
    later.now = T + 60;
    let (m2, a) = run(&m, &later);
    assert_eq!(m2.attempts, 2);
    assert!(!m2.retry_pending);
    assert_eq!(saves(&a).len(), 1);
    // The second attempt failing too: no more; resume.
    let (m3, a) = run(&m2, &obs(ended("failed", "")));
    assert_eq!(m3.state, Step::Resume);
    assert_eq!(probes(&a)[0].1, "resume");
    // Failed with the agent away: retried as soon as it is back.
    let mut away = obs(ended("failed", ""));
    away.contingency_up = false;
    let (m, _) = run(&n, &away);
    assert!(said(
        &m,
        "agent CONT1 is not connected: will save again when it is back"
    ));
    assert!(run(&m, &away).1.is_empty());
    let (m2, a) = run(&m, &obs(ended("failed", "")));
    assert_eq!((m2.attempts, saves(&a).len()), (2, 1));
    // Acknowledged while a retry waits: on to resume.
    let mut ack = m.clone();
    ack.acknowledged_by = "ana".into();
    let (m2, a) = run(&ack, &away);
    assert_eq!(m2.state, Step::Resume);
    assert_eq!(probes(&a)[0].1, "resume");
}

#[test]
fn resume_is_retried_with_backoff_until_it_works_or_is_acknowledged() {
    let mut n = night(Step::Resume);
    n.attempts = 1;
    n.saved = true;
    n.apply_suspended = true;
    let (m, a) = run(&n, &obs(ended("succeeded", "")));
    assert_eq!(m.state, Step::CatchUp);
    assert!(said(&m, "apply resumed"));
    assert_eq!(
        probes(&a)[0],
        (Role::Contingency, "catch-up", "replication".to_string())
    );
    let (m, a) = run(&n, &obs(ended("failed", "")));
    assert!(m.retry_pending && m.escalated);
    assert!(said(
        &m,
        "ESCALATION: apply could not be resumed (attempt 1)"
    ));
    assert_eq!(events(&a), ["night.escalated"]);
    let mut later = obs(ended("failed", ""));
    later.now = T + 60;
    let (m2, a) = run(&m, &later);
    assert_eq!((m2.attempts, m2.state), (2, Step::Resume));
    assert_eq!(probes(&a)[0].1, "resume");
    // The second failure waits twice as long.
    let (m3, _) = run(&m2, &later);
    assert_eq!(m3.wait_until, T + 60 + 120);
    let mut ack = m3.clone();
    ack.acknowledged_by = "ana".into();
    let (m4, a) = run(&ack, &later);
    assert_eq!(
        (m4.state, m4.outcome),
        (Step::Done, Some(Outcome::Degraded))
    );
    assert!(said(&m4, "ana acknowledged"));
    assert_eq!(events(&a), ["night.done"]);
    assert_eq!(
        (1..=7).map(backoff_seconds).collect::<Vec<_>>(),
        [60, 120, 240, 480, 900, 900, 900]
    );
}

#[test]
fn catch_up_checks_apply_runs_before_the_night_is_done() {
    let mut n = night(Step::CatchUp);
    n.saved = true;
    n.apply_suspended = true;
    n.attempts = 1;
    let mut o = obs(ended("succeeded", "apply=active backlog=3 latency=1"));
    o.contingency_volumes = vec!["CO0001".into()];
    let (m, a) = run(&n, &o);
    assert_eq!((m.state, m.outcome), (Step::Done, Some(Outcome::Ok)));
    assert!(!m.apply_suspended);
    assert!(said(&m, "replication catching up: backlog 3, latency 1s"));
    assert!(said(&m, "night done (contingency fallback): ok"));
    assert!(a.contains(&Action::CarryToMain {
        volumes: vec!["CO0001".into()]
    }));
    assert_eq!(events(&a), ["night.done"]);
    let (m, a) = run(
        &n,
        &obs(ended("succeeded", "apply=suspended backlog=9 latency=0")),
    );
    assert_eq!(m.state, Step::Resume);
    assert!(m.retry_pending && m.escalated && m.apply_suspended);
    assert!(said(
        &m,
        "apply is not running after resume (apply=suspended)"
    ));
    assert_eq!(events(&a), ["night.escalated"]);
    assert!(!said(&m, "catching up"));
}

#[test]
fn the_post_close_save_ends_the_night_with_its_outcome() {
    let n = night(Step::PostClose);
    assert!(run(&n, &obs(None)).1.is_empty());
    let (m, a) = run(&n, &obs(ended("succeeded", "")));
    assert_eq!((m.state, m.outcome), (Step::Done, Some(Outcome::Ok)));
    assert!(said(&m, "post-close save succeeded; night done"));
    assert_eq!(events(&a), ["night.done"]);
    let (m, _) = run(&n, &obs(ended("failed", "")));
    assert_eq!(m.outcome, Some(Outcome::Failed));
    let mut warned = ended("succeeded", "");
    warned.as_mut().unwrap().warnings = 2;
    let (m, _) = run(&n, &obs(warned));
    assert_eq!(
        m.outcome,
        Some(Outcome::Degraded),
        "objects changed while saved"
    );
    assert!(said(&m, "WARNING: the post-close save J1 has 2 warnings"));
    let mut late = n.clone();
    late.escalated = true;
    let (m, _) = run(&late, &obs(ended("succeeded", "")));
    assert_eq!(m.outcome, Some(Outcome::Degraded));
    let done = night(Step::Done);
    assert_eq!(run(&done, &obs(ended("succeeded", ""))), (done, vec![]));
}

#[test]
fn a_close_past_its_deadline_is_escalated_once() {
    let mut n = night(Step::CloseWindow);
    n.step_job.clear();
    let mut o = obs(None);
    o.now = n.deadline;
    let (m, a) = run(&n, &o);
    assert!(m.escalated && m.close_late);
    assert_eq!(events(&a), ["night.escalated", "close.late"]);
    assert!(said(
        &m,
        "ESCALATION: the close is still running past its deadline"
    ));
    assert!(run(&m, &o).1.is_empty(), "once");
    let mut post = night(Step::PostClose);
    post.deadline = T;
    assert!(
        !run(&post, &obs(None)).0.escalated,
        "the close had finished"
    );
}

#[test]
fn a_new_night_never_replaces_an_unfinished_one() {
    let n = night(Step::Resume);
    let (m, a) = overlap(&n, "2026-11-25", T);
    assert_eq!((m.id.as_str(), m.state), ("2026-11-24", Step::Resume));
    assert!(
        m.escalated
            && said(
                &m,
                "night 2026-11-25 is due but night 2026-11-24 is not finished"
            )
    );
    assert_eq!(events(&a), ["night.escalated"]);
}

#[test]
fn records_written_before_the_typed_machine_still_read() {
    let old = r#"{"id":"2026-11-24","state":"quiesce-wait","escalated":false,"deadline":5,
        "pre_close_job":"J1","post_close_job":"","close_started":null,"close_finished":7,
        "timeline":[[1,"x"]],"step_job":"J2","wait_until":9}"#;
    let n: Night = serde_json::from_str(old).unwrap();
    assert_eq!(
        (n.state, n.wait_until, n.outcome),
        (Step::QuiesceWait, 9, None)
    );
    for s in [
        Step::PreClose,
        Step::CloseWindow,
        Step::QuiesceCheck,
        Step::QuiesceWait,
        Step::QuiesceRecheck,
        Step::Signoff,
        Step::QuiesceFinal,
        Step::ReplicationCheck,
        Step::Suspend,
        Step::ContingencySave,
        Step::Resume,
        Step::CatchUp,
        Step::PostClose,
        Step::Done,
    ] {
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{}\"", s.as_str())
        );
    }
}
