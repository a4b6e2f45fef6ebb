//! The event hub: everything that happens, for whoever watches (dashboard, notifier, logs).
//!
//! Publishers never block: the hub's inbox is unbounded and the hub thread only moves `Arc`s.
//! Each subscriber has a bounded inbox; one that falls that far behind is dropped (it can
//! reconnect and get a fresh snapshot), so a stuck viewer can never slow the pipeline.

use std::sync::Arc;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TrySendError};

use crate::frameio::AuthState;
use crate::ledger::Job;

/// What happened. Named for the event, not for what a receiver should do.
#[derive(Clone, Debug)]
pub enum Event {
    /// A job changed (already recorded in the ledger).
    JobChanged(Job),
    /// A part of the program changed state. Names and what their states mean:
    /// `watcher` (detail: root and file count), `server` (the public file server), `tunnel`
    /// (detail: the public URL; `reconnecting` while cloudflared reconnects by itself with
    /// the same URL, `down` while it restarts, `off` with `tunnel.mode` off),
    /// `queue` (`up` = running, `off` = paused by a person). Frame.io sign-in has its own
    /// event, `AuthChanged`; the dashboard shows it as the `auth` component.
    Component {
        name: &'static str,
        state: ComponentState,
        detail: String,
    },
    /// The file server delivered bytes of a job's file: `covered` is the union of the ranges
    /// served so far this attempt, out of `total`. Forwarded from the file server's progress.
    Transfer {
        job: u64,
        covered: u64,
        total: u64,
        bytes_per_sec: f64,
    },
    /// A local upload's parts: `sent` bytes of the file taken by the connections to S3 so far
    /// this attempt (finished parts and the parts in flight), out of `total`. From the
    /// uploader, about twice a second while parts go up.
    PartsSent {
        job: u64,
        sent: u64,
        total: u64,
        bytes_per_sec: f64,
    },
    /// An upload attempt ended, in `mode` "remote" or "local", successfully or not.
    AttemptEnded {
        job: u64,
        /// The job's project (the `project` label of `/metrics`).
        project: String,
        mode: &'static str,
        ok: bool,
    },
    /// A log record at INFO or above (for the page's debug zone); see `logtail`.
    Log {
        level: log::Level,
        target: String,
        message: String,
    },
    /// Frame.io sign-in changed: `connected`, or `needs_login` (uploads wait; the page shows a
    /// banner and a notification goes out).
    AuthChanged(AuthState),
    /// The tunnel is up: `url` (a public base URL, no trailing `/`) reaches the file server.
    /// A new URL replaces the previous one; remote uploads on an older URL must be redone.
    TunnelUp { url: String },
    /// The URL of the last `TunnelUp` no longer works (or postflow is stopping). Not sent
    /// while cloudflared reconnects: that keeps the URL.
    TunnelDown { reason: String },
    /// News from Frame.io's review loop about a done job's file: ready for review, a
    /// comment, its Status (`job.review` is already the new one). For the notifier; the page
    /// follows the job's `JobChanged`.
    Review {
        job: Job,
        news: crate::review::ReviewNews,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComponentState {
    Starting,
    Up,
    /// Alive and getting back by itself (the tunnel: cloudflared reconnecting to the edge).
    Reconnecting,
    Degraded,
    Down,
    Off,
}

impl ComponentState {
    /// Every state, in the order they are listed (`/metrics` gives one sample each).
    pub const ALL: [ComponentState; 6] = [
        ComponentState::Starting,
        ComponentState::Up,
        ComponentState::Reconnecting,
        ComponentState::Degraded,
        ComponentState::Down,
        ComponentState::Off,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ComponentState::Starting => "starting",
            ComponentState::Up => "up",
            ComponentState::Reconnecting => "reconnecting",
            ComponentState::Degraded => "degraded",
            ComponentState::Down => "down",
            ComponentState::Off => "off",
        }
    }
}

enum HubMsg {
    /// Shared from the start: every subscriber gets the same event.
    Publish(Arc<Event>),
    Subscribe(Sender<Arc<Event>>),
}

/// A cheap, clonable handle for publishing and subscribing.
#[derive(Clone)]
pub struct Hub {
    tx: Sender<HubMsg>,
}

impl Hub {
    /// Creates the hub; run `run_hub` with the receiver on its own thread. The hub thread ends
    /// when every `Hub` handle is gone.
    pub fn new() -> (Hub, HubInbox) {
        let (tx, rx) = unbounded();
        (Hub { tx }, HubInbox { rx })
    }

    pub fn publish(&self, event: Event) {
        // The hub only stops after every publisher is gone, so this cannot fail in practice;
        // if it somehow does, losing a display event is harmless.
        let _ = self.tx.send(HubMsg::Publish(Arc::new(event)));
    }

    /// A new subscriber with room for `capacity` pending events.
    pub fn subscribe(&self, capacity: usize) -> Receiver<Arc<Event>> {
        let (tx, rx) = bounded(capacity);
        let _ = self.tx.send(HubMsg::Subscribe(tx));
        rx
    }
}

pub struct HubInbox {
    rx: Receiver<HubMsg>,
}

/// The hub's loop: fans each event out to the subscribers that keep up.
pub fn run_hub(inbox: HubInbox) {
    let mut subscribers: Vec<Sender<Arc<Event>>> = Vec::new();
    for msg in inbox.rx.iter() {
        match msg {
            HubMsg::Subscribe(tx) => subscribers.push(tx),
            HubMsg::Publish(event) => {
                subscribers.retain(|s| match s.try_send(Arc::clone(&event)) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        log::debug!("dropping an event subscriber that fell behind");
                        false
                    }
                    Err(TrySendError::Disconnected(_)) => false,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(detail: &str) -> Event {
        Event::Component {
            name: "watcher",
            state: ComponentState::Up,
            detail: detail.into(),
        }
    }

    #[test]
    fn subscribers_get_events_in_order_and_laggards_are_dropped() {
        let (hub, inbox) = Hub::new();
        let thread = std::thread::spawn(move || run_hub(inbox));
        let fast = hub.subscribe(100);
        let slow = hub.subscribe(1);
        for i in 0..5 {
            hub.publish(component(&i.to_string()));
        }
        drop(hub);
        thread.join().unwrap();
        let got: Vec<String> = fast
            .iter()
            .map(|e| match &*e {
                Event::Component { detail, .. } => detail.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, ["0", "1", "2", "3", "4"]);
        assert_eq!(
            slow.iter().count(),
            1,
            "the slow one got one event, then was dropped"
        );
    }
}
