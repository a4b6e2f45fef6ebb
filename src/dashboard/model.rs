//! What the dashboard knows between queue snapshots, kept up to date from hub events:
//! component states, active transfers, the log tail and the counters behind `/metrics`.
//! Pure: no I/O, time passed in, unit-tested below.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::events::{ComponentState, Event};
use crate::frameio::AuthState;
use crate::ledger::{Job, JobState};

/// Log lines kept for the debug zone.
pub const LOG_TAIL: usize = 200;
/// At most this many `transfer` messages per second per job reach the viewers.
const TRANSFER_INTERVAL: Duration = Duration::from_millis(500);
/// Finished jobs shown in a snapshot (every unfinished job is shown).
pub const RECENT_FINISHED: usize = 100;

#[derive(Clone, Debug)]
pub struct Component {
    pub state: ComponentState,
    pub detail: String,
    /// When it entered this state (unix ms).
    pub since_ms: u64,
}

#[derive(Clone, Debug)]
struct Transfer {
    covered: u64,
    total: u64,
    bytes_per_sec: f64,
    last_sent: Option<Instant>,
    /// When every byte was in (unix ms): from then on Frame.io is processing.
    all_in_ms: Option<u64>,
    /// `"server"` (Frame.io pulls from the file server) or `"parts"` (postflow sends them).
    via: &'static str,
}

#[derive(Default)]
pub struct Model {
    pub components: BTreeMap<&'static str, Component>,
    transfers: BTreeMap<u64, Transfer>,
    /// File names of jobs with a transfer, for the page.
    names: BTreeMap<u64, String>,
    log: VecDeque<Value>,
    /// Upload attempts that ended, by (project, mode, result).
    pub attempts: BTreeMap<(String, &'static str, &'static str), u64>,
    /// Distinct file bytes delivered by the file server (growth of each job's coverage).
    pub bytes_served: u64,
}

/// A message for the viewers: its `type` and `data`.
pub type Push = (&'static str, Value);

impl Model {
    /// Takes an event into the model and says what to push to viewers, if anything (transfers
    /// are throttled per job; the last one of a file always goes out).
    pub fn apply(&mut self, event: &Event, now: Instant, wall: SystemTime) -> Option<Push> {
        match event {
            // The tunnel's state reaches the page as its `Component "tunnel"` events; these
            // two are for the uploader's and notifier's benefit.
            Event::TunnelUp { .. } | Event::TunnelDown { .. } => None,
            // The job's `review` comes with its `job` message; this says what is new.
            Event::Review { job, news } => Some(("review", crate::review::news_json(job.id, news))),
            Event::JobChanged(job) => {
                if !matches!(job.state, JobState::Uploading | JobState::Processing) {
                    self.transfers.remove(&job.id);
                    self.names.remove(&job.id);
                } else {
                    self.names.insert(job.id, job.name().to_string());
                }
                Some(("job", job_json(job)))
            }
            Event::AuthChanged(auth) => {
                let (state, detail) = match auth {
                    AuthState::Connected => (ComponentState::Up, "connected".to_string()),
                    AuthState::NeedsLogin { reason } => {
                        (ComponentState::Down, format!("needs_login: {reason}"))
                    }
                };
                self.apply(
                    &Event::Component {
                        name: "auth",
                        state,
                        detail,
                    },
                    now,
                    wall,
                )
            }
            Event::Component {
                name,
                state,
                detail,
            } => {
                let since_ms = match self.components.get(name) {
                    Some(c) if c.state == *state => c.since_ms,
                    _ => unix_ms(wall),
                };
                let c = Component {
                    state: *state,
                    detail: detail.clone(),
                    since_ms,
                };
                let data = component_json(name, &c, wall);
                self.components.insert(name, c);
                Some(("component", data))
            }
            Event::Transfer {
                job,
                covered,
                total,
                bytes_per_sec,
            } => {
                // Coverage only grows within an attempt; a smaller value is a new attempt.
                let before = self.transfers.get(job).map_or(0, |t| t.covered);
                self.bytes_served += covered.saturating_sub(before);
                let moved = (*covered, *total, *bytes_per_sec);
                self.progress(*job, moved, "server", now, wall)
            }
            Event::PartsSent {
                job,
                sent,
                total,
                bytes_per_sec,
            } => self.progress(*job, (*sent, *total, *bytes_per_sec), "parts", now, wall),
            Event::AttemptEnded {
                project, mode, ok, ..
            } => {
                let result = if *ok { "ok" } else { "error" };
                *self
                    .attempts
                    .entry((project.clone(), mode, result))
                    .or_insert(0) += 1;
                None
            }
            Event::Log {
                level,
                target,
                message,
            } => {
                let line = json!({
                    "time": rfc3339(wall),
                    "level": level.as_str(),
                    "target": target,
                    "message": message,
                });
                if self.log.len() == LOG_TAIL {
                    self.log.pop_front();
                }
                self.log.push_back(line.clone());
                Some(("log", line))
            }
        }
    }

    /// A job's bytes moving, (covered, total, bytes/s), served by the file server or sent as
    /// parts (`via`).
    fn progress(
        &mut self,
        job: u64,
        (covered, total, bytes_per_sec): (u64, u64, f64),
        via: &'static str,
        now: Instant,
        wall: SystemTime,
    ) -> Option<Push> {
        let t = self.transfers.entry(job).or_insert(Transfer {
            covered: 0,
            total,
            bytes_per_sec: 0.0,
            last_sent: None,
            all_in_ms: None,
            via,
        });
        t.via = via;
        t.covered = covered;
        t.total = total;
        t.bytes_per_sec = bytes_per_sec;
        if covered < total {
            t.all_in_ms = None;
        } else if t.all_in_ms.is_none() {
            t.all_in_ms = Some(unix_ms(wall));
        }
        let due = t
            .last_sent
            .is_none_or(|at| now.duration_since(at) >= TRANSFER_INTERVAL);
        if due || covered >= total {
            t.last_sent = Some(now);
            Some(("transfer", self.transfer_json(job)))
        } else {
            None
        }
    }

    fn transfer_json(&self, job: u64) -> Value {
        let t = &self.transfers[&job];
        json!({
            "job": job,
            "name": self.names.get(&job),
            "covered": t.covered,
            "total": t.total,
            "bytes_per_sec": t.bytes_per_sec,
            "all_in_ms": t.all_in_ms,
            "via": t.via,
        })
    }

    pub fn transfers_json(&self) -> Vec<Value> {
        self.transfers
            .keys()
            .map(|id| self.transfer_json(*id))
            .collect()
    }

    /// Every component as of `wall` (its `for_ms` counts to then).
    pub fn components_json(&self, wall: SystemTime) -> Value {
        Value::Object(
            self.components
                .iter()
                .map(|(name, c)| (name.to_string(), component_json(name, c, wall)))
                .collect(),
        )
    }

    pub fn log_json(&self) -> Vec<Value> {
        self.log.iter().cloned().collect()
    }
}

/// `since_ms` is when it entered its state (unix ms); `for_ms` how long ago that was at
/// `wall`, so a viewer can count on (`reconnecting for 12 s`) with its own clock.
fn component_json(name: &str, c: &Component, wall: SystemTime) -> Value {
    json!({
        "name": name,
        "state": c.state.as_str(),
        "detail": c.detail,
        "since_ms": c.since_ms,
        "for_ms": unix_ms(wall).saturating_sub(c.since_ms),
    })
}

/// A job as the page and the API see it: the ledger's fields plus `name`, and for a version
/// `stack_summary`, the line the page and the notifications show ("v004, stacked on v003").
pub fn job_json(job: &Job) -> Value {
    let mut v = serde_json::to_value(job).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("name".into(), json!(job.name()));
        m.insert("review".into(), json!(job.review));
        // Always present (DESIGN's Job): null when not said.
        m.insert("verified".into(), json!(job.verified));
        m.insert("sha256".into(), json!(job.sha256));
        if let Some(stacking) = &job.stack {
            m.insert(
                "stack_summary".into(),
                json!(crate::stack::summary(stacking)),
            );
        }
    }
    v
}

/// A finished job as `/api/history` shows it: [`job_json`] plus its project, how it was
/// verified (`null` when it could not be said), its times as RFC 3339 (`stable`,
/// `started`, `sent`: every byte in, `finished`; `null` when not known), `duration_ms` and
/// `bytes_per_sec` of its transfer, and `error` (why it failed or was skipped).
pub fn history_json(job: &Job) -> Value {
    use crate::history::{bytes_per_sec, duration_ms, finished_at, project_of, rfc3339_ms};
    let mut v = job_json(job);
    if let Value::Object(m) = &mut v {
        let time = |ms: Option<u64>| json!(ms.map(rfc3339_ms));
        m.entry("project").or_insert(json!(project_of(job)));
        m.entry("verified").or_insert(Value::Null);
        let t = job.times();
        m.insert("stable".into(), time(t.stable_ms));
        m.insert("started".into(), time(t.started_ms));
        m.insert("sent".into(), time(t.sent_ms));
        m.insert("finished".into(), time(Some(finished_at(job))));
        m.insert("duration_ms".into(), json!(duration_ms(job)));
        m.insert("bytes_per_sec".into(), json!(bytes_per_sec(job)));
        let error = (job.state != JobState::Done).then_some(job.reason.as_deref());
        m.insert("error".into(), json!(error.flatten()));
    }
    v
}

/// The jobs worth showing: every unfinished one, then the most recently finished ones, newest
/// first.
pub fn recent(mut jobs: Vec<Job>) -> Vec<Job> {
    jobs.sort_by(|a, b| b.updated_ms.cmp(&a.updated_ms).then(b.id.cmp(&a.id)));
    let mut finished = 0;
    jobs.retain(|j| {
        if j.state.is_final() {
            finished += 1;
            finished <= RECENT_FINISHED
        } else {
            true
        }
    });
    jobs
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub use crate::timefmt::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, state: JobState, updated_ms: u64) -> Job {
        Job {
            id,
            project: "default".into(),
            path: format!("a/f{id}.mov"),
            size: 10,
            mtime_ns: 0,
            state,
            folder: String::new(),
            attempts: 0,
            next_attempt_ms: None,
            reason: None,
            file_id: None,
            unknown_file: false,
            view_url: None,
            all_in_ms: None,
            created_ms: 0,
            updated_ms,
            stack: None,
            times: None,
            review: Default::default(),
            verified: None,
            sha256: None,
            next_ms: None,
        }
    }

    fn transfer(covered: u64) -> Event {
        Event::Transfer {
            job: 1,
            covered,
            total: 100,
            bytes_per_sec: 1.0,
        }
    }

    #[test]
    fn transfers_are_throttled_but_the_last_always_goes_out() {
        let mut m = Model::default();
        let (t0, wall) = (Instant::now(), SystemTime::now());
        m.apply(&Event::JobChanged(job(1, JobState::Uploading, 1)), t0, wall);
        assert!(m.apply(&transfer(10), t0, wall).is_some());
        assert!(m
            .apply(&transfer(20), t0 + Duration::from_millis(100), wall)
            .is_none());
        let (kind, data) = m
            .apply(&transfer(30), t0 + Duration::from_millis(600), wall)
            .unwrap();
        assert_eq!(kind, "transfer");
        assert_eq!(data["covered"], 30);
        assert_eq!(data["name"], "f1.mov");
        assert!(m
            .apply(&transfer(100), t0 + Duration::from_millis(650), wall)
            .is_some());
        assert_eq!(m.bytes_served, 100);
        m.apply(&Event::JobChanged(job(1, JobState::Done, 2)), t0, wall);
        assert!(m.transfers_json().is_empty());
    }

    #[test]
    fn parts_sent_show_as_a_transfer_and_say_since_when_frameio_is_processing() {
        let mut m = Model::default();
        let (t0, wall) = (Instant::now(), SystemTime::now());
        m.apply(&Event::JobChanged(job(1, JobState::Uploading, 1)), t0, wall);
        let parts = |sent: u64| Event::PartsSent {
            job: 1,
            sent,
            total: 100,
            bytes_per_sec: 5.0,
        };
        let (_, data) = m.apply(&parts(40), t0, wall).unwrap();
        assert_eq!(
            (data["covered"].as_u64(), data["total"].as_u64()),
            (Some(40), Some(100))
        );
        assert!(data["all_in_ms"].is_null());
        let later = wall + Duration::from_secs(7);
        let (_, data) = m
            .apply(&parts(100), t0 + Duration::from_secs(7), later)
            .unwrap();
        assert_eq!(data["all_in_ms"].as_u64(), Some(unix_ms(later)));
        assert_eq!(m.bytes_served, 0, "parts are not served by the file server");
        assert_eq!(data["via"], "parts");
        m.apply(
            &Event::JobChanged(job(1, JobState::Processing, 2)),
            t0,
            wall,
        );
        assert_eq!(
            m.transfers_json()[0]["all_in_ms"].as_u64(),
            Some(unix_ms(later))
        );
    }

    #[test]
    fn recent_keeps_every_unfinished_job_and_the_newest_finished() {
        let mut jobs: Vec<Job> = (1..=150).map(|i| job(i, JobState::Done, i)).collect();
        jobs.push(job(500, JobState::Queued, 0));
        let r = recent(jobs);
        assert_eq!(r.len(), RECENT_FINISHED + 1);
        assert_eq!(r[0].id, 150);
        assert!(r.iter().any(|j| j.id == 500));
    }

    #[test]
    fn a_reconnecting_tunnel_says_since_when_and_for_how_long() {
        let mut m = Model::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let tunnel = |state| Event::Component {
            name: "tunnel",
            state,
            detail: "https://a-b-c.trycloudflare.com".into(),
        };
        m.apply(&tunnel(ComponentState::Up), Instant::now(), t0);
        let (_, pushed) = m
            .apply(
                &tunnel(ComponentState::Reconnecting),
                Instant::now(),
                t0 + Duration::from_secs(5),
            )
            .unwrap();
        assert_eq!(pushed["state"], "reconnecting");
        assert_eq!(pushed["for_ms"], 0);
        // Still reconnecting: the start of the state stays where it was.
        m.apply(
            &tunnel(ComponentState::Reconnecting),
            Instant::now(),
            t0 + Duration::from_secs(9),
        );
        let all = m.components_json(t0 + Duration::from_secs(17));
        assert_eq!(all["tunnel"]["since_ms"], 1_005_000);
        assert_eq!(all["tunnel"]["for_ms"], 12_000);
    }

    #[test]
    fn the_log_tail_is_bounded() {
        let mut m = Model::default();
        for i in 0..LOG_TAIL + 5 {
            m.apply(
                &Event::Log {
                    level: log::Level::Info,
                    target: "t".into(),
                    message: i.to_string(),
                },
                Instant::now(),
                SystemTime::now(),
            );
        }
        let log = m.log_json();
        assert_eq!(log.len(), LOG_TAIL);
        assert_eq!(log[0]["message"], "5");
    }
}
