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
