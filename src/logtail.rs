//! The logger: env_logger on stderr, plus a copy of every INFO-or-above record sent to the hub
//! as `Event::Log`, for the page's debug zone.
//!
//! Logging starts before the hub exists, so the hub is attached later (`attach`) and detached
//! at shutdown (`detach`): the hub thread ends only when every `Hub` handle is gone, and the
//! logger must not keep it alive.

use std::sync::Mutex;

use log::{Level, Log, Metadata, Record};

use crate::events::{Event, Hub};

static HUB: Mutex<Option<Hub>> = Mutex::new(None);

struct Tail {
    inner: env_logger::Logger,
}

impl Log for Tail {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.inner.matches(record) {
            return;
        }
        self.inner.log(record);
        if record.level() <= Level::Info {
            // A poisoned lock only means another thread panicked while logging; the process is
            // going down anyway, and the page can do without this line.
            if let Ok(hub) = HUB.lock() {
                if let Some(hub) = hub.as_ref() {
                    hub.publish(Event::Log {
                        level: record.level(),
                        target: record.target().to_string(),
                        message: record.args().to_string(),
                    });
                }
            }
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Installs the logger: `filter` is an env_logger filter (`info`, `info,postflow::serve=debug`);
/// `target` is stderr, or the log file of a process with no console. A second call does
/// nothing (tests may start several pipelines in one process).
pub fn init(filter: &str, target: env_logger::Target) {
    let inner = env_logger::Builder::new()
        .parse_filters(filter)
        .format_timestamp_secs()
        .target(target)
        .build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Tail { inner })).is_ok() {
        log::set_max_level(max);
    }
}

/// From now on INFO-and-above records also go to `hub`.
pub fn attach(hub: Hub) {
    if let Ok(mut h) = HUB.lock() {
        *h = Some(hub);
    }
}

/// Stops forwarding (at shutdown, so the hub thread can end).
pub fn detach() {
    if let Ok(mut h) = HUB.lock() {
        *h = None;
    }
}
