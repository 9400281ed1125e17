//! Records of the core as the protocol's messages.

use cinta_proto::v1 as pb;

use crate::catalog::{JobRow, SaveSetRow};
use crate::night::Night;

pub fn assignment(j: &JobRow) -> pb::JobAssignment {
    pb::JobAssignment {
        job_id: j.id.clone(),
        control_group: j.control_group.clone(),
        entries: j
            .assignment
            .entries
            .iter()
            .map(|e| pb::SaveEntry {
                path: e.path.clone(),
                include: e.include.clone(),
                exclude: e.exclude.clone(),
                library: e.library.clone(),
                command: e.command.clone(),
            })
            .collect(),
        library: j.assignment.library.clone(),
        level: j.assignment.level.clone(),
        compress: j.assignment.compress,
        pre: j.assignment.pre.clone(),
        post: j.assignment.post.clone(),
        step_timeout_seconds: j.assignment.step_timeout_seconds,
        expire: j.assignment.expire.clone(),
        shred: j.assignment.shred,
        eject: j.assignment.eject.clone(),
        import: j.assignment.import.clone(),
        media_class: j.assignment.media_class.clone(),
        restores: j
            .assignment
            .restores
            .iter()
            .map(|r| pb::RestoreItem {
                save_set: r.save_set.clone(),
                select: r.select.clone(),
                to: r.to.clone(),
                replace: r.replace,
                command: r.command.clone(),
            })
            .collect(),
        copy: j.assignment.copy.clone(),
    }
}

/// A record built from another with the same fields (the core's and the
/// protocol's, either way).
macro_rules! same_fields {
    ($from:expr, $to:path, [$($f:ident),*]) => {{
        let s = $from;
        $to { $($f: s.$f),* }
    }};
}

pub fn restore_outcome(o: pb::RestoreOutcome) -> crate::restores::Outcome {
    same_fields!(
        o,
        crate::restores::Outcome,
        [save_set, to, objects, bytes, failed, damaged, from_copies]
    )
}

pub fn drill_pb(d: crate::drills::Drill) -> pb::Drill {
    pb::Drill {
        id: d.id,
        created: d.created,
        seed: d.seed,
        by: d.by,
        state: d.state,
        ended: d.ended,
        servers: d
            .servers
            .into_iter()
            .map(|s| pb::DrillServer {
                agent: s.agent,
                library: s.library,
                samples: s
                    .samples
                    .into_iter()
                    .map(|x| pb::DrillSample {
                        save_set: x.save_set,
                        control_group: x.control_group,
                        created: x.created,
                        volumes: x.volumes,
                        objects: x.select,
                        bytes: x.bytes,
                    })
                    .collect(),
                scratch: s.to,
                job: s.job,
                state: s.state,
                message: s.message,
                started: s.started,
                ended: s.ended,
                objects: s.objects,
                bytes: s.bytes,
                outcomes: s.outcomes.into_iter().map(restore_outcome_pb).collect(),
            })
            .collect(),
    }
}

fn restore_outcome_pb(o: crate::restores::Outcome) -> pb::RestoreOutcome {
    same_fields!(
        o,
        pb::RestoreOutcome,
        [save_set, to, objects, bytes, failed, damaged, from_copies]
    )
}

/// What a restore request asks, both ways.
macro_rules! spec_fields {
    ($from:expr, $to:path) => {
        same_fields!(
            $from,
            $to,
            [
                server,
                paths,
                at,
                to,
                original,
                ticket,
                urgent,
                requester,
                email,
                reason,
                into_library
            ]
        )
    };
}

pub fn restore_spec(s: pb::RestoreRequestSpec) -> crate::restores::Spec {
    spec_fields!(s, crate::restores::Spec)
}

pub fn restore_request_pb(r: crate::restores::Request) -> pb::RestoreRequest {
    pb::RestoreRequest {
        id: r.id,
        spec: Some(spec_fields!(r.spec, pb::RestoreRequestSpec)),
        state: r.state,
        outcome: r.outcome,
        requested_by: r.requested_by,
        agent: r.agent,
        library: r.library,
        plan: r
            .plan
            .into_iter()
            .map(|p| pb::RestorePlanItem {
                objects: p.select.len() as u32,
                save_set: p.save_set,
                created: p.created,
                volumes: p.volumes,
                data_class: p.data_class,
                bytes: p.bytes,
            })
            .collect(),
        attempts: r
            .attempts
            .into_iter()
            .map(|a| pb::RestoreAttempt {
                job: a.job,
                started: a.started,
                ended: a.ended,
                state: a.state,
                message: a.message,
                outcomes: a.outcomes.into_iter().map(restore_outcome_pb).collect(),
            })
            .collect(),
        history: r
            .history
            .into_iter()
            .map(|h| pb::RestoreStep {
                time: h.time,
                state: h.state,
                who: h.who,
                note: h.note,
            })
            .collect(),
        refusal: r.refusal,
        nearest: r.nearest,
        objects: r.objects,
        bytes: r.bytes,
        back_by: r.back_by,
        restore_seconds: r.restore_seconds,
    }
}

pub fn volume_pb(w: crate::media::VolumeView) -> pb::Volume {
    let (next_move_to, next_move_at, next_move_why) = match w.due {
        Some(d) => (d.to, d.at, d.why.to_string()),
        None => (String::new(), 0, String::new()),
    };
    pb::Volume {
        volser: w.v.volser,
        agent: w.v.agent,
        library: w.v.library,
        site: w.v.site,
        location: w.v.location,
        since: w.v.since,
        in_transit_to: w.v.in_transit_to,
        move_job: w.v.move_job,
        move_policy: w.v.move_policy,
        save_sets: w.v.save_sets,
        expired: w.expired,
        next_move_to,
        next_move_at,
        next_move_why,
        last_written: w.v.last_written,
    }
}

pub fn night_pb(n: Night) -> pb::Night {
    let waiting_for = n.waiting_for();
    pb::Night {
        id: n.id,
        state: n.state.as_str().into(),
        outcome: n
            .outcome
            .map(|o| o.as_str().to_string())
            .unwrap_or_default(),
        waiting_for,
        escalated: n.escalated,
        deadline: n.deadline,
        pre_close_job: n.pre_close_job,
        post_close_job: n.post_close_job,
        timeline: n
            .timeline
            .into_iter()
            .map(|(time, text)| pb::NightEvent { time, text })
            .collect(),
    }
}

pub fn job_pb(j: JobRow) -> pb::Job {
    let steps = j
        .assignment
        .pre
        .iter()
        .chain(&j.assignment.post)
        .cloned()
        .collect();
    pb::Job {
        steps,
        id: j.id,
        control_group: j.control_group,
        agent: j.agent,
        state: j.state,
        created: j.created,
        started: j.started,
        finished: j.finished,
        message: j.message,
        entries_done: j.entries_done,
        entries_total: j.entries_total,
        bytes: j.bytes,
        bytes_total: j.bytes_total,
        objects: j.objects,
        current: j.current,
        output: j.output,
        save_sets: j.save_sets.into_iter().map(save_set_pb).collect(),
    }
}

pub fn save_set_pb(s: SaveSetRow) -> pb::SaveSetResult {
    pb::SaveSetResult {
        id: s.id,
        source: s.source,
        key_id: s.key_id,
        volumes: s.volumes,
        objects: s.objects,
        bytes: s.bytes,
        warnings: s.warnings,
        changed: s.changed,
        changed_count: s.changed_count,
    }
}

/// A save set as an agent reports it (the inverse of [`save_set_pb`]).
pub fn save_set_row(s: pb::SaveSetResult) -> SaveSetRow {
    SaveSetRow {
        id: s.id,
        source: s.source,
        key_id: s.key_id,
        volumes: s.volumes,
        objects: s.objects,
        bytes: s.bytes,
        warnings: s.warnings,
        changed: s.changed,
        changed_count: s.changed_count,
    }
}

pub fn copy_made(c: pb::CopyOutcome) -> crate::copies::Made {
    same_fields!(
        c,
        crate::copies::Made,
        [save_set, copy, volumes, bytes, digest, verified]
    )
}
