//! The queue: the one owner of the job ledger.
//!
//! Every job change is written to the ledger first and published on the hub second, so what
//! anyone sees has already survived a crash. Other threads never touch the ledger; they send
//! the queue a message and, when they need an answer, a reply channel.

use crossbeam_channel::{select, Receiver, Sender};

use crate::events::Hub;
use crate::ledger::{Job, Ledger};

/// What other threads tell or ask the queue.
pub enum QueueMsg {
    /// Asks for a copy of every job (for status pages and `postflow status`).
    Jobs(Sender<Vec<Job>>),
}

/// Runs until `stop` closes; flushes the ledger on the way out.
pub fn run_queue(mut ledger: Ledger, inbox: Receiver<QueueMsg>, stop: Receiver<()>, _hub: Hub) {
    loop {
        select! {
            recv(inbox) -> msg => match msg {
                Ok(QueueMsg::Jobs(reply)) => {
                    let _ = reply.send(ledger.jobs().values().cloned().collect());
                }
                Err(_) => break,
            },
            recv(stop) -> _ => break,
        }
    }
    if let Err(e) = ledger.flush() {
        log::error!(
            "ledger {}: final flush failed: {e}",
            ledger.path().display()
        );
    }
}
