//! The history of finished jobs (`done`, `failed`, `skipped`), as `/api/history`,
//! `/api/history.csv` and the daily totals of `/api/throughput` answer it.
//!
//! The queue keeps a [`History`] index beside its ledger, updated with every job it records:
//! the finished jobs ordered by the time they finished (with each one's state, size and path
//! in lower case), and per-day totals. A page is then a walk down that order from the cursor,
//! filtering on the index alone and reading from the ledger only the jobs on the page, never
//! a sort or a copy of every job (`bench/history.rs` times it on 100 000 jobs).
//!
//! **The day** of a finished job is the UTC date of its `finished_ms` (older jobs, recorded
//! before postflow kept that time, use the time they were last changed). The same rule
//! decides which day's totals a job counts in and which jobs `since`/`until` select, so a
//! day's `files` in `/api/throughput` is exactly the number of `done` jobs `/api/history`
//! lists for that day, its `bytes` the sum of their sizes and `failed` the number of `failed`
//! ones.
//!
//! Pure: no I/O; unit-tested below.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use crate::ledger::{Job, JobState};

const DAY_MS: u64 = 86_400_000;
/// The largest page `page_size` may ask for.
pub const MAX_PAGE: usize = 1000;
/// The page size when none is asked for.
pub const DEFAULT_PAGE: usize = 50;

/// The project of a job, for the `project` filter (`default` for a config without `projects`
/// and for jobs recorded before projects existed).
pub fn project_of(job: &Job) -> &str {
    &job.project
}

/// When a finished job finished, for ordering and for its day.
pub fn finished_at(job: &Job) -> u64 {
    job.times
        .as_ref()
        .and_then(|t| t.finished_ms)
        .unwrap_or(job.updated_ms)
}

/// The UTC day (days since 1970-01-01) of a time in unix ms.
pub fn day_of(ms: u64) -> u64 {
    ms / DAY_MS
}

/// Totals of the jobs that finished on one day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DayTotals {
    /// `done` jobs.
    pub files: u64,
    /// The sum of the sizes of the `done` jobs.
    pub bytes: u64,
    /// `failed` jobs.
    pub failed: u64,
}

/// What the index holds of each finished job: enough to filter it by state and text and to
/// undo its day's totals without looking at the ledger.
#[derive(Clone, Copy, Debug)]
struct Row {
    size: u64,
    /// Its path in ASCII lower case: `paths[start..start + len]` (16 bytes a row, not 32:
    /// the index of 100 000 jobs stays well under the 20 MB the history may cost).
    start: u32,
    len: u16,
    state: JobState,
}

/// The finished jobs in the order they finished, and the totals per day.
#[derive(Default)]
pub struct History {
    /// (finished, id) → row, newest last.
    order: BTreeMap<(u64, u64), Row>,
    /// When each indexed job finished: its key in `order`.
    finished: HashMap<u64, u64>,
    days: BTreeMap<u64, DayTotals>,
    /// The rows' paths end to end: a text search reads one string, not 100 000 jobs.
    paths: String,
    /// Bytes of `paths` no row points at any more (compacted when they are most of it).
    garbage: usize,
}

/// A page of history, filtered; `None` fields do not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub project: Option<String>,
    /// Text in the path, case-insensitive.
    pub q: Option<String>,
    pub state: Option<JobState>,
    /// Finished at or after (unix ms).
    pub since_ms: Option<u64>,
    /// Finished at or before (unix ms).
    pub until_ms: Option<u64>,
    /// Where the previous page ended (see [`Cursor`]).
    pub cursor: Option<Cursor>,
    pub page_size: usize,
    /// Count every job the filter selects (a CSV export going page by page does not need to).
    pub count: bool,
}

/// Where a page ended: the (finished, id) of its last job. Opaque to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    at: u64,
    id: u64,
}

impl Cursor {
    pub fn encode(self) -> String {
        format!("{:x}-{:x}", self.at, self.id)
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let (at, id) = s.split_once('-')?;
        Some(Cursor {
            at: u64::from_str_radix(at, 16).ok()?,
            id: u64::from_str_radix(id, 16).ok()?,
        })
    }
}

/// One page, newest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    pub jobs: Vec<Job>,
    pub next: Option<Cursor>,
    /// Every job the filter selects, on all pages (0 when not counted).
    pub total: usize,
}

impl History {
    /// Takes a job as recorded: indexed while finished, dropped from the index (and its day's
    /// totals) when it is not, or no longer, finished.
    pub fn observe(&mut self, job: &Job) {
        if let Some(at) = self.finished.remove(&job.id) {
            if let Some(old) = self.order.remove(&(at, job.id)) {
                self.count(at, old, false);
                self.garbage += old.len as usize;
            }
        }
        if job.state.is_final() {
            let at = finished_at(job);
            // A path longer than 64 KiB (none is) is searched by its start.
            let path = job.path.to_ascii_lowercase();
            let path = &path[..floor_char_boundary(&path, u16::MAX as usize)];
            let start = self.paths.len();
            self.paths.push_str(path);
            let row = Row {
                state: job.state,
                size: job.size,
                start: start as u32,
                len: path.len() as u16,
            };
            self.order.insert((at, job.id), row);
            self.finished.insert(job.id, at);
            self.count(at, row, true);
        }
        if self.garbage > 1 << 16 && self.garbage > self.paths.len() / 2 {
            self.compact();
        }
    }

    /// Rewrites `paths` without the garbage.
    fn compact(&mut self) {
        let old = std::mem::take(&mut self.paths);
        let mut paths = String::with_capacity(old.len() - self.garbage);
        for row in self.order.values_mut() {
            let start = row.start as usize;
            let at = paths.len() as u32;
            paths.push_str(&old[start..start + row.len as usize]);
            row.start = at;
        }
        self.paths = paths;
        self.garbage = 0;
    }

    /// A row's path, in lower case.
    fn text(&self, row: &Row) -> &str {
        let start = row.start as usize;
        &self.paths[start..start + row.len as usize]
    }

    fn count(&mut self, at: u64, row: Row, add: bool) {
        if !matches!(row.state, JobState::Done | JobState::Failed) {
            return;
        }
        let day = self.days.entry(day_of(at)).or_default();
        let (files, bytes, failed) = match row.state {
            JobState::Done => (1, row.size, 0),
            _ => (0, 0, 1),
        };
        if add {
            day.files += files;
            day.bytes += bytes;
            day.failed += failed;
        } else {
            day.files -= files;
            day.bytes -= bytes;
            day.failed -= failed;
        }
        if *day == DayTotals::default() {
            self.days.remove(&day_of(at));
        }
    }

    /// Finished jobs in the index.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The totals of the `n` days up to and including `today`, oldest first (zeros included).
    pub fn days(&self, today: u64, n: u64) -> Vec<(u64, DayTotals)> {
        let first = today.saturating_sub(n.saturating_sub(1));
        (first..=today)
            .map(|d| (d, self.days.get(&d).copied().unwrap_or_default()))
            .collect()
    }

    /// A page of the jobs `query` selects, newest first; `lookup` finds a job by id (the
    /// ledger). Only the jobs on the page are copied.
    pub fn page<'a>(&self, query: &Query, lookup: impl Fn(u64) -> Option<&'a Job>) -> Page {
        let lo = (query.since_ms.unwrap_or(0), 0);
        let hi = (query.until_ms.unwrap_or(u64::MAX), u64::MAX);
        if lo > hi {
            return Page::default();
        }
        let needle = query
            .q
            .as_deref()
            .filter(|q| !q.is_empty())
            .map(str::to_ascii_lowercase);
        let plain = needle.is_none() && query.project.is_none();
        // State and text from the index alone; the project (rare) from the ledger's job.
        let matches = |&(_, id): &(u64, u64), row: &Row| -> bool {
            query.state.is_none_or(|s| s == row.state)
                && needle.as_deref().is_none_or(|n| self.text(row).contains(n))
                && query
                    .project
                    .as_deref()
                    .is_none_or(|p| lookup(id).is_some_and(|j| p == project_of(j)))
        };
        let size = query.page_size.clamp(1, MAX_PAGE);
        // The total is the size of the range when only time filters; otherwise it is counted
        // in the same walk that fills the page (one look at each job, never two).
        let count_walking = query.count && !(plain && query.state.is_none());
        let walk_hi = match query.cursor {
            // Not counting: start right below the cursor.
            Some(c) if !count_walking => hi.min((c.at, c.id)),
            _ => hi,
        };
        if lo > walk_hi {
            return Page::default();
        }
        let below = |key: &(u64, u64)| query.cursor.is_none_or(|c| *key < (c.at, c.id));
        let mut jobs: Vec<Job> = Vec::with_capacity(size);
        let mut next = None;
        let mut total = 0;
        for (key, row) in self.order.range(lo..=walk_hi).rev() {
            if !matches(key, row) {
                continue;
            }
            total += 1;
            if !below(key) {
                continue;
            }
            if jobs.len() < size {
                // Only the jobs on the page are read from the ledger, and copied.
                if let Some(job) = lookup(key.1) {
                    jobs.push(job.clone());
                }
            } else if next.is_none() {
                let last = jobs.last().expect("a full page has a last job");
                next = Some(Cursor {
                    at: finished_at(last),
                    id: last.id,
                });
                if !count_walking {
                    break;
                }
            }
        }
        let total = match (query.count, count_walking) {
            (false, _) => 0,
            (true, true) => total,
            (true, false) => self.order.range(lo..=hi).count(),
        };
        Page { jobs, next, total }
    }
}

/// The largest char boundary of `s` at or below `at`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    (0..=at.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// How long the job's transfer took (from its attempt's start to its last byte, or to its
/// end when that is not known), in ms.
pub fn duration_ms(job: &Job) -> Option<u64> {
    let t = job.times.as_deref()?;
    let start = t.started_ms?;
    let end = t.sent_ms.or(t.finished_ms)?;
    Some(end.saturating_sub(start))
}

/// The average rate of a `done` job's transfer, bytes per second.
pub fn bytes_per_sec(job: &Job) -> Option<u64> {
    if job.state != JobState::Done {
        return None;
    }
    let ms = duration_ms(job)?.max(1);
    Some(job.size.saturating_mul(1000) / ms)
}

/// The CSV export's columns, in order.
pub const CSV_HEADER: &[&str] = &[
    "id",
    "project",
    "path",
    "state",
    "size",
    "folder",
    "frameio_link",
    "attempts",
    "stable",
    "started",
    "sent",
    "finished",
    "duration_s",
    "bytes_per_sec",
    "verified",
    "sha256",
    "error",
];

/// One CSV line (CRLF, RFC 4180) for a job.
pub fn csv_row(job: &Job, out: &mut String) {
    let time = |ms: Option<u64>| ms.map(rfc3339_ms).unwrap_or_default();
    let times = job.times();
    let error = match job.state {
        JobState::Done => String::new(),
        _ => job.reason.clone().unwrap_or_default(),
    };
    let cells = [
        job.id.to_string(),
        project_of(job).to_string(),
        job.path.clone(),
        job.state.as_str().to_string(),
        job.size.to_string(),
        job.folder.clone(),
        job.view_url.clone().unwrap_or_default(),
        job.attempts.to_string(),
        time(times.stable_ms),
        time(times.started_ms),
        time(times.sent_ms),
        time(Some(finished_at(job))),
        duration_ms(job)
            .map(|ms| format!("{:.1}", ms as f64 / 1000.0))
            .unwrap_or_default(),
        bytes_per_sec(job)
            .map(|b| b.to_string())
            .unwrap_or_default(),
        job.verified
            .map(|v| v.as_str().to_string())
            .unwrap_or_default(),
        job.sha256.clone().unwrap_or_default(),
        error,
    ];
    csv_line(cells.iter().map(String::as_str), out);
}

/// Writes cells as one CSV line.
pub fn csv_line<'a>(cells: impl Iterator<Item = &'a str>, out: &mut String) {
    for (i, cell) in cells.enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_cell(cell, out);
    }
    out.push_str("\r\n");
}

/// One cell: a text a spreadsheet would take for a formula (starting with `=`, `+`, `-`, `@`,
/// a tab or a carriage return) gets a leading `'` (OWASP's advice for CSV injection), and a
/// cell holding a comma, a quote or a line break is quoted with its quotes doubled.
fn csv_cell(cell: &str, out: &mut String) {
    let formula = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || cell.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in cell.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

/// `YYYY-MM-DD` of a UTC day number.
pub fn date_of_day(day: u64) -> String {
    let mut s = rfc3339_ms(day * DAY_MS);
    s.truncate(10);
    s
}

/// RFC 3339 (UTC, milliseconds) of a time in unix ms.
pub fn rfc3339_ms(ms: u64) -> String {
    crate::timefmt::rfc3339(UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::JobTimes;

    fn job(id: u64, path: &str, state: JobState, finished: u64, size: u64) -> Job {
        Job {
            id,
            project: crate::config::DEFAULT_PROJECT.into(),
            path: path.into(),
            size,
            mtime_ns: 0,
            state,
            folder: String::new(),
            attempts: 1,
            next_attempt_ms: None,
            reason: None,
            file_id: None,
            unknown_file: false,
            view_url: None,
            all_in_ms: None,
            created_ms: 0,
            updated_ms: finished,
            stack: None,
            times: Some(Box::new(JobTimes {
                finished_ms: Some(finished),
                ..JobTimes::default()
            })),
            review: Default::default(),
            verified: None,
            sha256: None,
            next_ms: None,
        }
    }

    struct Fixture {
        jobs: BTreeMap<u64, Job>,
        history: History,
    }

    impl Fixture {
        fn new(jobs: Vec<Job>) -> Fixture {
            let mut history = History::default();
            for j in &jobs {
                history.observe(j);
            }
            Fixture {
                jobs: jobs.into_iter().map(|j| (j.id, j)).collect(),
                history,
            }
        }

        fn page(&self, query: &Query) -> Page {
            self.history.page(query, |id| self.jobs.get(&id))
        }

        fn ids(&self, query: &Query) -> Vec<u64> {
            self.page(query).jobs.iter().map(|j| j.id).collect()
        }
    }

    fn query(page_size: usize) -> Query {
        Query {
            page_size,
            count: true,
            ..Query::default()
        }
    }

    #[test]
    fn pages_go_newest_first_and_the_cursor_leads_through_every_job_once() {
        let f = Fixture::new(
            (1..=7)
                .map(|i| job(i, &format!("f{i}.mov"), JobState::Done, 1000 + (i % 3), 1))
                .collect(),
        );
        let mut seen = Vec::new();
        let mut q = query(3);
        loop {
            let page = f.page(&q);
            assert_eq!(page.total, 7);
            seen.extend(page.jobs.iter().map(|j| (finished_at(j), j.id)));
            match page.next {
                Some(c) => q.cursor = Cursor::decode(&c.encode()),
                None => break,
            }
        }
        let mut sorted = seen.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(seen, sorted, "newest first, ties by id");
        assert_eq!(seen.len(), 7, "every job once: {seen:?}");
    }

    #[test]
    fn unfinished_jobs_are_not_history_and_a_retried_job_leaves_it() {
        let mut failed = job(1, "a.mov", JobState::Failed, 1000, 5);
        let mut f = Fixture::new(vec![
            failed.clone(),
            job(2, "b.mov", JobState::Queued, 900, 5),
        ]);
        assert_eq!(f.ids(&query(10)), [1]);
        failed.state = JobState::Queued;
        f.history.observe(&failed);
        f.jobs.insert(1, failed);
        assert!(f.ids(&query(10)).is_empty());
        assert_eq!(f.history.days(0, 1)[0].1, DayTotals::default());
    }

    #[test]
    fn filters_select_by_text_state_time_and_project() {
        let f = Fixture::new(vec![
            job(1, "SQ01/A001_v001.mov", JobState::Done, 1000, 1),
            job(2, "SQ01/a001_v002.mov", JobState::Failed, 2000, 1),
            job(3, "SQ02/B001.mov", JobState::Done, 3000, 1),
            job(4, "notes.pdf", JobState::Skipped, 4000, 1),
        ]);
        let q = |f: &dyn Fn(&mut Query)| {
            let mut q = query(10);
            f(&mut q);
            q
        };
        assert_eq!(f.ids(&q(&|q| q.q = Some("a001".into()))), [2, 1]);
        assert_eq!(f.ids(&q(&|q| q.state = Some(JobState::Done))), [3, 1]);
        assert_eq!(
            f.ids(&q(&|q| {
                q.since_ms = Some(2000);
                q.until_ms = Some(3000);
            })),
            [3, 2]
        );
        assert_eq!(f.ids(&q(&|q| q.project = Some("default".into()))).len(), 4);
        assert!(f.ids(&q(&|q| q.project = Some("other".into()))).is_empty());
        let page = f.page(&q(&|q| {
            q.q = Some("sq0".into());
            q.page_size = 1;
        }));
        assert_eq!(
            (page.jobs.len(), page.total),
            (1, 3),
            "total counts every page"
        );
    }

    #[test]
    fn day_totals_follow_the_utc_day_a_job_finished_and_equal_the_history_of_that_day() {
        let midnight = 20_000 * DAY_MS;
        let f = Fixture::new(vec![
            job(1, "late.mov", JobState::Done, midnight - 1, 100),
            job(2, "early.mov", JobState::Done, midnight, 30),
            job(3, "bad.mov", JobState::Failed, midnight + 5, 7),
            job(4, "skip.mov", JobState::Skipped, midnight + 6, 9),
            job(5, "noon.mov", JobState::Done, midnight + DAY_MS / 2, 12),
        ]);
        let days = f.history.days(20_000, 2);
        assert_eq!(days[0].0, 19_999);
        assert_eq!(
            days[0].1,
            DayTotals {
                files: 1,
                bytes: 100,
                failed: 0
            }
        );
        assert_eq!(
            days[1].1,
            DayTotals {
                files: 2,
                bytes: 42,
                failed: 1
            }
        );
        assert_eq!(date_of_day(20_000), "2024-10-04");
        // The history of that day, as a client asks it, adds up to the same.
        let mut q = query(100);
        q.since_ms = Some(midnight);
        q.until_ms = Some(midnight + DAY_MS - 1);
        let page = f.page(&q);
        let done: Vec<&Job> = page
            .jobs
            .iter()
            .filter(|j| j.state == JobState::Done)
            .collect();
        assert_eq!(done.len() as u64, days[1].1.files);
        assert_eq!(done.iter().map(|j| j.size).sum::<u64>(), days[1].1.bytes);
    }

    #[test]
    fn a_job_changing_many_times_is_found_once_after_its_paths_are_compacted() {
        let mut f = Fixture::new(vec![job(1, "keep/Me.mov", JobState::Done, 5, 1)]);
        let mut j = job(2, "SQ09/Retried_A_Lot.mov", JobState::Failed, 10, 1);
        for round in 0..20_000u64 {
            j.state = if round % 2 == 0 {
                JobState::Queued
            } else {
                JobState::Failed
            };
            f.history.observe(&j);
        }
        f.jobs.insert(2, j);
        assert!(f.history.paths.len() < 1 << 17, "compacted");
        let mut q = query(10);
        q.q = Some("a_lot".into());
        assert_eq!(f.ids(&q), [2]);
        q.q = Some("ME.MOV".into());
        assert_eq!(f.ids(&q), [1]);
    }

    #[test]
    fn csv_cells_are_quoted_and_formulas_are_defused() {
        let mut out = String::new();
        csv_line(
            [
                "plain",
                "a,b",
                "say \"hi\"",
                "=HYPERLINK(\"x\")",
                "+1",
                "-2",
                "@SUM(A1)",
                "two\nlines",
                "",
            ]
            .into_iter(),
            &mut out,
        );
        assert_eq!(
            out,
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"'=HYPERLINK(\"\"x\"\")\",\"'+1\",\"'-2\",\
             \"'@SUM(A1)\",\"two\nlines\",\r\n"
        );
    }

    #[test]
    fn a_csv_row_has_every_column() {
        let mut j = job(9, "=cmd.mov", JobState::Done, 2_000, 4_000);
        j.times_mut().started_ms = Some(1_000);
        j.times_mut().sent_ms = Some(1_500);
        let mut out = String::new();
        csv_row(&j, &mut out);
        let cells: Vec<&str> = out.trim_end().split(',').collect();
        assert_eq!(cells.len(), CSV_HEADER.len());
        assert_eq!(cells[2], "\"'=cmd.mov\"");
        assert_eq!(cells[12], "0.5");
        assert_eq!(cells[13], "8000");
    }

    #[test]
    fn cursors_round_trip_and_nonsense_is_refused() {
        let c = Cursor {
            at: 1_733_500_000_123,
            id: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("nonsense"), None);
        assert_eq!(Cursor::decode("1-"), None);
    }
}
