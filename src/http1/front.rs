//! The stage (one thread reading heads from every waiting connection) and the worker pool.
//! The module doc of `http1` says how a connection moves between them, and why.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::sys::{self, PollSet};
use super::{parse, Body, Parsed, Request, Response};

/// How long a whole head may wait for a free worker before the stage answers 503, when every
/// worker the stage may have is busy.
const QUEUE_WAIT: Duration = Duration::from_secs(1);
/// How long it may wait when a worker is idle or may still be started: one is on its way, late
/// only on a machine too busy to run it (measured under Wine on a loaded machine: over a
/// second). A backstop for a worker that could not be started at all.
const QUEUE_WAIT_UNSATURATED: Duration = Duration::from_secs(10);
/// How long a closing connection is drained after its last response, at most.
const LINGER: Duration = Duration::from_secs(2);
/// Bytes per write step: each step must be taken by the socket within `io_timeout`.
pub(crate) const STEP: usize = 1024 * 1024;
/// The longest a worker waits on a socket before looking at the stop flag (and its own
/// reasons to stop, such as a revoked link).
const TICK: Duration = Duration::from_millis(200);
/// When every worker is busy and a request waits, a request whose client has not taken (or
/// sent) its current step for this long is cut to make room.
const CUT_AFTER: Duration = Duration::from_secs(5);
/// An idle worker thread ends after this long.
const WORKER_IDLE: Duration = Duration::from_secs(30);
/// After `accept` fails (out of descriptors), the listener rests this long.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Connections accepted per turn of the stage, so reading the waiting ones never starves.
const ACCEPT_BATCH: usize = 256;
/// Bytes read per `read` call while a head is coming in.
const READ_CHUNK: usize = 4096;

/// What one listener allows.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Names the threads (`<name>-front`, `<name>-conn`) and starts the log lines.
    pub name: &'static str,
    /// Requests served at once, each on a worker thread.
    pub workers: usize,
    /// Longest request head (431 beyond).
    pub max_head: usize,
    /// A whole head must arrive within this of the connection opening, or of the first byte
    /// after an idle keep-alive.
    pub head_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Each write step (and a whole request body) must complete within this.
    pub io_timeout: Duration,
    /// Connections the stage holds at once (waiting for a head, idle, lingering).
    pub max_waiting: usize,
    /// Sent with 503 when no worker is free.
    pub retry_after_secs: u32,
}

/// A listener's side of the front: its routes, and its own pages for what the front refuses.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Answers one request. `Outcome::KeepAlive` only when the answer allowed it (the front
    /// closes anyway if a declared body was not read).
    fn serve(&self, req: &Request, conn: Conn) -> Outcome;

    /// The page for an answer the front gives by itself: a malformed head (400), one too large
    /// (431), one not complete in time (408), no free worker (503). The front adds `Date`,
    /// `Content-Length`, `Connection: close` and, for 503, `Retry-After`.
    fn refusal(&self, status: u16, why: &str) -> Response;
}

/// What became of a connection after a request.
pub(crate) enum Outcome {
    /// Wait for the next request.
    KeepAlive(Conn),
    /// Drain briefly and close.
    Close(Conn),
    /// The handler took the socket ([`Conn::detach`]).
    Detached,
}

/// Signalled by a wait when the listener is stopping.
#[derive(Debug)]
pub(crate) struct Stopping;

impl std::fmt::Display for Stopping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("server stopping")
    }
}

impl std::error::Error for Stopping {}

/// Signalled by a wait when the stage cut the request to make room for a waiting one.
#[derive(Debug)]
pub(crate) struct Cut;

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cut: the client was too slow while other requests waited")
    }
}

impl std::error::Error for Cut {}

/// What the stage sees of a worker's request, to pick one to cut when others wait.
#[derive(Default)]
struct Slot {
    /// When the step the worker is waiting on the client for began (`None`: not waiting on
    /// the client at all).
    step_since: Mutex<Option<Instant>>,
    /// Set by the stage: give way.
    cut: AtomicBool,
}

impl Slot {
    fn step_since(&self) -> Option<Instant> {
        *self.step_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_step(&self, since: Option<Instant>) {
        *self.step_since.lock().unwrap_or_else(|e| e.into_inner()) = since;
    }
}

/// Counters shared by the front and every connection.
struct Flags {
    stopping: AtomicBool,
    open: AtomicUsize,
}

/// One client connection: a non-blocking socket and the bytes received but not used yet.
pub(crate) struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// The rest of a body, or pipelined requests.
    buf: Vec<u8>,
    io_timeout: Duration,
    /// Body bytes of the current request not read yet; `u64::MAX` for a chunked body, which
    /// is never read.
    body_left: u64,
    expect_continue: bool,
    /// A deadline passed: the client stopped taking or sending bytes. Closed with a reset.
    stalled: bool,
    /// The worker's slot while a worker serves this connection.
    slot: Option<Arc<Slot>>,
    open: Open,
}

/// Counts a connection as open while it lives.
struct Open(Arc<Flags>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Conn {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The socket (non-blocking), for `sendfile`.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn stopping(&self) -> bool {
        self.open.0.stopping.load(Ordering::SeqCst)
    }

    /// Writes all of `bytes`. Every step of up to [`STEP`] bytes must be taken by the socket
    /// within `io_timeout`: a client that stops reading, or reads a trickle, is dropped.
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all_checked(bytes, &|| Ok(()))
    }

    /// [`Conn::write_all`], asking `check` after every short wait whether to go on (an
    /// `Err` from it ends the write).
    pub fn write_all_checked(
        &mut self,
        bytes: &[u8],
        check: &dyn Fn() -> io::Result<()>,
    ) -> io::Result<()> {
        for step in bytes.chunks(STEP) {
            let deadline = self.begin_step();
            let mut left = step;
            while !left.is_empty() {
                match (&self.stream).write(left) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => left = &left[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.wait_writable(deadline)?;
                        check()?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.end_step();
        Ok(())
    }

    /// Starts a step (up to [`STEP`] bytes for the client to take): returns its deadline.
    pub fn begin_step(&mut self) -> Instant {
        let now = Instant::now();
        if let Some(slot) = &self.slot {
            slot.set_step(Some(now));
        }
        now + self.io_timeout
    }

    /// The worker waits on the client no more (until the next step).
    pub fn end_step(&mut self) {
        if let Some(slot) = &self.slot {
            slot.set_step(None);
        }
    }

    /// Waits up to a short tick for the socket to take more bytes: `Ok(true)` when it can,
    /// `Ok(false)` when the tick ran out (look at your own reasons to stop, then call again),
    /// `Err(TimedOut)` once `deadline` has passed, `Err(Stopping)` when the server stops.
    pub fn wait_writable(&mut self, deadline: Instant) -> io::Result<bool> {
        let left = self.time_left(deadline)?;
        sys::wait_writable(&self.stream, left.min(TICK))
    }

    fn time_left(&mut self, deadline: Instant) -> io::Result<Duration> {
        if self.stopping() {
            return Err(io::Error::other(Stopping));
        }
        if self
            .slot
            .as_ref()
            .is_some_and(|s| s.cut.load(Ordering::SeqCst))
        {
            self.stalled = true;
            return Err(io::Error::other(Cut));
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero());
        self.stalled = left.is_none();
        left.ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no progress in time"))
    }

    /// Reads the whole body the current request declared (its `Content-Length`, which the
    /// caller has checked), within `io_timeout`. Sends `100 Continue` first if the client
    /// waits for it.
    pub fn read_body(&mut self) -> io::Result<Vec<u8>> {
        self.read_body_within(self.io_timeout)
    }

    /// [`Conn::read_body`] with the whole body due within `within` (at most `io_timeout`): a
    /// body that trickles cannot hold a worker longer than that.
    pub fn read_body_within(&mut self, within: Duration) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.body_left)
            .ok()
            .filter(|_| self.body_left != u64::MAX)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no readable body"))?;
        if self.expect_continue && self.buf.is_empty() {
            self.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        self.expect_continue = false;
        let deadline = self.begin_step().min(Instant::now() + within);
        let from_buf = len.min(self.buf.len());
        let mut body: Vec<u8> = self.buf.drain(..from_buf).collect();
        body.resize(len, 0);
        let mut got = from_buf;
        while got < len {
            match (&self.stream).read(&mut body[got..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = self.time_left(deadline)?;
                    sys::wait_readable(&self.stream, left.min(TICK))?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.body_left = 0;
        self.end_step();
        Ok(body)
    }

    /// Whether the current request's body (or part of it) is still unread.
    pub fn body_pending(&self) -> bool {
        self.body_left > 0
    }

    /// Takes the socket out of the front (blocking again), with the bytes already received
    /// after the head. It no longer counts as an open connection.
    pub fn detach(self) -> io::Result<(TcpStream, Vec<u8>)> {
        self.stream.set_nonblocking(false)?;
        Ok((self.stream, self.buf))
    }

    fn begin(&mut self, req: &Request) {
        self.body_left = match req.body {
            Body::None => 0,
            Body::Length(n) => n,
            Body::Chunked => u64::MAX,
        };
        self.expect_continue = req.expect_continue && self.body_left > 0;
    }
}

/// A whole head waiting for a worker.
struct Job {
    req: Request,
    conn: Conn,
    since: Instant,
}

#[derive(Default)]
struct Pool {
    queue: VecDeque<Job>,
    /// Workers waiting for a job.
    idle: usize,
    /// Worker threads alive.
    workers: usize,
    /// One per worker alive.
    slots: Vec<Arc<Slot>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// With every worker busy, marks as many stalled requests to be cut as there are heads
    /// waiting (beyond those already being cut), oldest step first.
    fn cut_stalled(&self, workers: usize, now: Instant) {
        if self.workers < workers {
            return;
        }
        let waiting = self.queue.len().saturating_sub(self.idle);
        let cutting = self
            .slots
            .iter()
            .filter(|s| s.cut.load(Ordering::SeqCst))
            .count();
        let mut stalled: Vec<(Instant, &Arc<Slot>)> = self
            .slots
            .iter()
            .filter(|s| !s.cut.load(Ordering::SeqCst))
            .filter_map(|s| Some((s.step_since()?, s)))
            .filter(|(since, _)| now.saturating_duration_since(*since) >= CUT_AFTER)
            .collect();
        stalled.sort_by_key(|(since, _)| *since);
        for (_, slot) in stalled.into_iter().take(waiting.saturating_sub(cutting)) {
            slot.cut.store(true, Ordering::SeqCst);
        }
    }
}

/// A connection coming back from a worker.
enum Back {
    KeepAlive(Conn),
    Close(Conn),
}

struct Shared {
    limits: Limits,
    handler: Arc<dyn Handler>,
    flags: Arc<Flags>,
    pool: Mutex<Pool>,
    work: Condvar,
    back: Sender<Back>,
    waker: Waker,
}

impl Shared {
    fn pool(&self) -> MutexGuard<'_, Pool> {
        // Plain bookkeeping; a panic while holding it ends the process anyway (abort).
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> bool {
        self.flags.stopping.load(Ordering::SeqCst)
    }

    fn give_back(&self, back: Back) {
        // The stage is gone only when stopping: the connection just closes.
        if self.back.send(back).is_ok() {
            self.waker.wake();
        }
    }
}

/// A running listener: its stage thread and its workers. Stops (closing every connection it
/// holds and joining every thread) on [`Front::stop`] or drop.
pub(crate) struct Front {
    shared: Arc<Shared>,
    stage: Option<JoinHandle<()>>,
}

impl Front {
    /// Starts serving `listener` with `handler`.
    pub fn start(
        listener: TcpListener,
        mut limits: Limits,
        handler: Arc<dyn Handler>,
    ) -> io::Result<Front> {
        listener.set_nonblocking(true)?;
        // A quarter of the process's descriptors per listener at most, so a flood on both
        // still leaves the rest of postflow room to open its files.
        let fair_share = usize::try_from(sys::descriptor_limit() / 4).unwrap_or(usize::MAX);
        limits.max_waiting = limits.max_waiting.min(fair_share).max(16);
        let (back, back_rx) = unbounded();
        let shared = Arc::new(Shared {
            limits,
            handler,
            flags: Arc::new(Flags {
                stopping: AtomicBool::new(false),
                open: AtomicUsize::new(0),
            }),
            pool: Mutex::new(Pool::default()),
            work: Condvar::new(),
            back,
            waker: Waker::new()?,
        });
        let stage = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("{}-front", shared.limits.name))
                .spawn(move || Stage::new(listener, shared, back_rx).run())?
        };
        Ok(Front {
            shared,
            stage: Some(stage),
        })
    }

    /// Connections open right now: waiting for a head, idle between requests, queued or
    /// being served (not WebSockets, which left the front).
    pub fn open_connections(&self) -> usize {
        self.shared.flags.open.load(Ordering::SeqCst)
    }

    /// Stops accepting, closes every connection and joins every thread. Requests being served
    /// end at their next wait on the socket.
    pub fn stop(&mut self) {
        let Some(stage) = self.stage.take() else {
            return;
        };
        self.shared.flags.stopping.store(true, Ordering::SeqCst);
        self.shared.waker.wake();
        let _ = stage.join();
        let threads = {
            let mut pool = self.shared.pool();
            pool.queue.clear();
            self.shared.work.notify_all();
            std::mem::take(&mut pool.threads)
        };
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where a connection held by the stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A head is on its way (or expected on a fresh connection).
    Head,
    /// Keep-alive, between requests.
    Idle,
    /// Shut down for writing after the last answer; drained until the client closes.
    Linger,
}

struct Waiting {
    conn: Conn,
    phase: Phase,
    deadline: Instant,
    /// When it entered this phase: who has waited longest gives way first.
    since: Instant,
}

struct Stage {
    listener: TcpListener,
    shared: Arc<Shared>,
    back: Receiver<Back>,
    table: Vec<Waiting>,
    /// The listener rests until then after a failed accept.
    accept_rest: Option<Instant>,
    accept_failing: bool,
}

impl Stage {
    fn new(listener: TcpListener, shared: Arc<Shared>, back: Receiver<Back>) -> Stage {
        Stage {
            listener,
            shared,
            back,
            table: Vec::new(),
            accept_rest: None,
            accept_failing: false,
        }
    }

    fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    fn run(mut self) {
        let mut set = PollSet::default();
        while !self.shared.stopping() {
            let now = Instant::now();
            while let Ok(back) = self.back.try_recv() {
                self.take_back(back, now);
            }
            self.refuse_queued_too_long(now);
            self.expire(now);

            // The rest after a failed accept is over: listen again (and stop waking for it).
            if self.accept_rest.is_some_and(|t| now >= t) {
                self.accept_rest = None;
            }
            set.clear();
            let waker = self.shared.waker.register(&mut set);
            let listener = self.accept_rest.is_none().then(|| set.push(&self.listener));
            let first = self.table.first().map(|w| set.push(w.conn.stream()));
            for w in self.table.iter().skip(1) {
                set.push(w.conn.stream());
            }
            let wake_at = self.next_deadline(now);
            if let Err(e) = set.wait(wake_at.saturating_duration_since(now)) {
                log::warn!("{}: poll failed: {e}", self.limits().name);
                thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
            if self.shared.stopping() {
                break;
            }
            if set.ready(waker) {
                self.shared.waker.drain();
            }
            if let Some(first) = first {
                let now = Instant::now();
                // Backwards, so that `swap_remove` only moves entries already looked at.
                for i in (0..self.table.len()).rev() {
                    if set.ready(first + i) {
                        self.on_readable(i, now);
                    }
                }
            }
            if listener.is_some_and(|i| set.ready(i)) {
                self.accept();
            }
        }
        // Dropping the table closes every connection it holds; then the listener closes.
        self.table.clear();
    }

    /// The earliest time something in the stage needs attention.
    fn next_deadline(&self, now: Instant) -> Instant {
        let mut at = now + Duration::from_secs(5);
        for w in &self.table {
            at = at.min(w.deadline);
        }
        if let Some(job) = self.shared.pool().queue.front() {
            // A stalled request may become the one to cut meanwhile.
            at = at.min(job.since + QUEUE_WAIT).min(now + TICK);
        }
        if let Some(rest) = self.accept_rest {
            at = at.min(rest);
        }
        at
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            let (stream, peer) = match self.listener.accept() {
                Ok(conn) => conn,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // Out of descriptors and the like: rest a little and carry on; a server
                    // that stops accepting for good is worse than a slow one.
                    if !self.accept_failing {
                        log::warn!("{}: accept failed: {e}; retrying", self.limits().name);
                    }
                    self.accept_failing = true;
                    self.accept_rest = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            };
            if self.accept_failing {
                log::info!("{}: accepting connections again", self.limits().name);
                self.accept_failing = false;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                log::debug!(
                    "{}: cannot set up the connection from {peer}: {e}",
                    self.limits().name
                );
                continue;
            }
            // Responses are written whole; Nagle would only delay the last segment.
            let _ = stream.set_nodelay(true);
            self.make_room();
            self.shared.flags.open.fetch_add(1, Ordering::SeqCst);
            let conn = Conn {
                stream,
                peer,
                buf: Vec::new(),
                io_timeout: self.limits().io_timeout,
                body_left: 0,
                expect_continue: false,
                stalled: false,
                slot: None,
                open: Open(Arc::clone(&self.shared.flags)),
            };
            let now = Instant::now();
            self.table.push(Waiting {
                conn,
                phase: Phase::Head,
                deadline: now + self.limits().head_timeout,
                since: now,
            });
        }
    }

    /// At `max_waiting`, closes the connection that has waited longest, lingering ones
    /// first, then idle keep-alives, then slow heads: a client that sends its head at once
    /// is always newer than the ones trickling.
    fn make_room(&mut self) {
        while self.table.len() >= self.limits().max_waiting {
            let victim = [Phase::Linger, Phase::Idle, Phase::Head]
                .into_iter()
                .find_map(|phase| {
                    self.table
                        .iter()
                        .enumerate()
                        .filter(|(_, w)| w.phase == phase)
                        .min_by_key(|(_, w)| w.since)
                        .map(|(i, _)| i)
                });
            let Some(i) = victim else { return };
            let w = self.table.swap_remove(i);
            log::debug!(
                "{}: {} connections waiting; closing the one from {} ({:?} since {:?})",
                self.limits().name,
                self.limits().max_waiting,
                w.conn.peer,
                w.phase,
                w.since.elapsed()
            );
        }
    }

    fn take_back(&mut self, back: Back, now: Instant) {
        match back {
            // Nothing more is owed to a client that stopped reading.
            Back::Close(conn) if conn.stalled => sys::reset_on_close(&conn.stream),
            Back::Close(conn) => self.linger(conn, now),
            Back::KeepAlive(mut conn) => {
                // An idle connection should cost a socket, not a buffer sized for a head.
                if conn.buf.is_empty() {
                    conn.buf = Vec::new();
                }
                self.make_room();
                let limits = self.limits();
                let (phase, deadline) = if conn.buf.is_empty() {
                    (Phase::Idle, now + limits.idle_timeout)
                } else {
                    (Phase::Head, now + limits.head_timeout)
                };
                self.table.push(Waiting {
                    conn,
                    phase,
                    deadline,
                    since: now,
                });
                // Part of the next request may have come with the last one.
                if phase == Phase::Head {
                    self.try_parse(self.table.len() - 1, now);
                }
            }
        }
    }

    /// Heads that waited `QUEUE_WAIT` for a worker while every worker was busy get 503 (once
    /// stalled requests had their chance to make room); with a worker idle or still to be
    /// started, `QUEUE_WAIT_UNSATURATED`.
    fn refuse_queued_too_long(&mut self, now: Instant) {
        let expired: Vec<Job> = {
            let mut pool = self.shared.pool();
            let workers = self.limits().workers;
            pool.cut_stalled(workers, now);
            let saturated = pool.workers >= workers && pool.queue.len() > pool.idle;
            let wait = if saturated {
                QUEUE_WAIT
            } else {
                QUEUE_WAIT_UNSATURATED
            };
            let mut out = Vec::new();
            while pool
                .queue
                .front()
                .is_some_and(|job| now >= job.since + wait)
            {
                out.extend(pool.queue.pop_front());
            }
            out
        };
        for job in expired {
            self.busy(job.conn, &job.req, now);
        }
    }

    fn expire(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.table.len() {
            if self.table[i].deadline > now {
                i += 1;
                continue;
            }
            let w = self.table.swap_remove(i);
            // A head begun and not finished in time gets 408; a connection that never sent a
            // byte, an idle keep-alive and a lingering close just close.
            if w.phase == Phase::Head && !w.conn.buf.is_empty() {
                log::debug!(
                    "{}: {} sent no whole head in time",
                    self.limits().name,
                    w.conn.peer
                );
                self.refuse(w.conn, 408, "request head not complete in time", false, now);
            }
        }
    }

    fn on_readable(&mut self, i: usize, now: Instant) {
        if self.table[i].phase == Phase::Linger {
            if !drain(&self.table[i].conn) {
                self.table.swap_remove(i);
            }
            return;
        }
        let max_head = self.limits().max_head;
        let w = &mut self.table[i];
        let mut chunk = [0u8; READ_CHUNK];
        let mut line_end = false;
        let open = loop {
            let room = max_head.saturating_sub(w.conn.buf.len()).min(READ_CHUNK);
            if room == 0 {
                break true;
            }
            match (&w.conn.stream).read(&mut chunk[..room]) {
                Ok(0) => break false,
                Ok(n) => {
                    if w.phase == Phase::Idle {
                        w.phase = Phase::Head;
                        w.since = now;
                        w.deadline = now + self.shared.limits.head_timeout;
                    }
                    line_end |= chunk[..n].contains(&b'\n');
                    w.conn.buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        if !open {
            // The client went away before sending a whole head: nobody to answer.
            self.table.swap_remove(i);
            return;
        }
        // A head ends with a line end; parsing only then keeps a head trickled byte by byte
        // from costing a parse per byte.
        if line_end || self.table[i].conn.buf.len() >= max_head {
            self.try_parse(i, now);
        }
    }

    /// Looks at the head in entry `i`'s buffer: refuses it, hands it to a worker, or waits.
    fn try_parse(&mut self, i: usize, now: Instant) {
        let parsed = parse(&self.table[i].conn.buf, self.limits().max_head);
        match parsed {
            Parsed::Partial => {}
            Parsed::Invalid(status, why) => {
                let w = self.table.swap_remove(i);
                log::debug!("{}: {}: {status} ({why})", self.limits().name, w.conn.peer);
                self.refuse(w.conn, status, why, false, now);
            }
            Parsed::Complete(req, len) => {
                let mut w = self.table.swap_remove(i);
                w.conn.buf.drain(..len);
                if let Some(job) = self.submit(Job {
                    req,
                    conn: w.conn,
                    since: now,
                }) {
                    self.busy(job.conn, &job.req, now);
                }
            }
        }
    }

    /// Queues a head for a worker, starting one if none is free; gives the job back when
    /// `workers` heads already wait.
    fn submit(&self, job: Job) -> Option<Job> {
        let limits = self.limits();
        let mut pool = self.shared.pool();
        if pool.queue.len() >= limits.workers {
            return Some(job);
        }
        pool.queue.push_back(job);
        pool.cut_stalled(limits.workers, Instant::now());
        if pool.queue.len() > pool.idle && pool.workers < limits.workers {
            pool.threads.retain(|t| !t.is_finished());
            let shared = Arc::clone(&self.shared);
            let spawned = thread::Builder::new()
                .name(format!("{}-conn", limits.name))
                .spawn(move || work(&shared));
            match spawned {
                Ok(t) => {
                    pool.workers += 1;
                    pool.threads.push(t);
                }
                // The head waits for a running worker, or gets its 503 after QUEUE_WAIT.
                Err(e) => log::warn!("{}: cannot start a worker thread: {e}", limits.name),
            }
        }
        self.shared.work.notify_one();
        None
    }

    /// No worker free: 503 with `Retry-After`.
    fn busy(&mut self, conn: Conn, req: &Request, now: Instant) {
        log::debug!(
            "{}: refusing {}: all {} workers busy",
            self.limits().name,
            conn.peer,
            self.limits().workers
        );
        self.refuse(conn, 503, "busy", req.is_head(), now);
    }

    /// Answers with the handler's page for `status` and closes (after a linger).
    fn refuse(&mut self, conn: Conn, status: u16, why: &str, head_only: bool, now: Instant) {
        let mut response = self.shared.handler.refusal(status, why);
        if status == 503 {
            response =
                response.with_header("Retry-After", self.limits().retry_after_secs.to_string());
        }
        // One non-blocking write: a few hundred bytes fit any socket buffer, and a client
        // that filled ours with unread answers gets nothing more.
        let bytes = response.encode(head_only, Some("close"));
        if matches!((&conn.stream).write(&bytes), Ok(n) if n == bytes.len()) {
            self.linger(conn, now);
        }
    }

    /// Shuts down for writing and drains what the client still sends (a body we did not
    /// read, a pipelined request) for a moment: closing with unread input sends a reset,
    /// which can destroy the last answer before the client reads it.
    fn linger(&mut self, mut conn: Conn, now: Instant) {
        if conn.stream.shutdown(Shutdown::Write).is_err() {
            return;
        }
        conn.buf = Vec::new();
        self.make_room();
        self.table.push(Waiting {
            conn,
            phase: Phase::Linger,
            deadline: now + LINGER,
            since: now,
        });
    }
}

/// Reads and drops what is there; false once the client has closed (or failed).
fn drain(conn: &Conn) -> bool {
    let mut sink = [0u8; READ_CHUNK];
    loop {
        match (&conn.stream).read(&mut sink) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// A worker thread: takes heads from the queue and serves them until idle for
/// `WORKER_IDLE`, or the front stops.
fn work(shared: &Shared) {
    let slot = Arc::new(Slot::default());
    shared.pool().slots.push(Arc::clone(&slot));
    let leave = |pool: &mut Pool| {
        pool.workers -= 1;
        pool.slots.retain(|s| !Arc::ptr_eq(s, &slot));
    };
    loop {
        let job = {
            let mut pool = shared.pool();
            loop {
                if shared.stopping() {
                    leave(&mut pool);
                    return;
                }
                if let Some(job) = pool.queue.pop_front() {
                    break job;
                }
                pool.idle += 1;
                let (guard, waited) = shared
                    .work
                    .wait_timeout(pool, WORKER_IDLE)
                    .unwrap_or_else(|e| e.into_inner());
                pool = guard;
                pool.idle -= 1;
                if waited.timed_out() && pool.queue.is_empty() {
                    leave(&mut pool);
                    return;
                }
            }
        };
        slot.cut.store(false, Ordering::SeqCst);
        serve(shared, job, &slot);
        slot.set_step(None);
    }
}

/// Serves a head, then any whole requests already read behind it (pipelining), then gives
/// the connection back to the stage. The worker is free as soon as this returns.
fn serve(shared: &Shared, job: Job, slot: &Arc<Slot>) {
    let Job {
        mut req, mut conn, ..
    } = job;
    conn.slot = Some(Arc::clone(slot));
    loop {
        slot.set_step(None);
        conn.begin(&req);
        conn = match shared.handler.serve(&req, conn) {
            Outcome::Detached => return,
            Outcome::Close(mut conn) => {
                conn.slot = None;
                return shared.give_back(Back::Close(conn));
            }
            Outcome::KeepAlive(mut conn) if conn.body_left > 0 => {
                // The body was never read: what follows cannot be told apart from it.
                conn.slot = None;
                return shared.give_back(Back::Close(conn));
            }
            Outcome::KeepAlive(conn) => conn,
        };
        match parse(&conn.buf, shared.limits.max_head) {
            Parsed::Complete(next, len) if !shared.stopping() => {
                conn.buf.drain(..len);
                req = next;
            }
            // Partial, or not a request: the stage waits for the rest, or refuses it.
            _ => {
                conn.slot = None;
                return shared.give_back(Back::KeepAlive(conn));
            }
        }
    }
}

/// Wakes the stage from its poll when a worker gives a connection back, or on stop: a byte
/// written to one end of a connected pair makes the other end, which the stage polls with
/// its connections, readable.
struct Waker {
    tx: WakerEnd,
    rx: WakerEnd,
}

impl Waker {
    fn new() -> io::Result<Waker> {
        let (tx, rx) = connected_pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok(Waker { tx, rx })
    }

    fn wake(&self) {
        // Full means a wake-up is already pending.
        let _ = (&self.tx).write(&[1]);
    }

    fn register(&self, set: &mut PollSet) -> usize {
        set.push(&self.rx)
    }

    fn drain(&self) {
        let mut sink = [0u8; 64];
        while matches!((&self.rx).read(&mut sink), Ok(n) if n > 0) {}
    }
}

#[cfg(unix)]
type WakerEnd = std::os::unix::net::UnixStream;

#[cfg(unix)]
fn connected_pair() -> io::Result<(WakerEnd, WakerEnd)> {
    std::os::unix::net::UnixStream::pair()
}

/// Winsock has no socketpair(2), and WSAPoll watches sockets only: a loopback TCP connection
/// stands in for the pair.
#[cfg(windows)]
type WakerEnd = TcpStream;

#[cfg(windows)]
fn connected_pair() -> io::Result<(WakerEnd, WakerEnd)> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    let tx = TcpStream::connect(listener.local_addr()?)?;
    // Without it, a wake-up written while the previous one is still unacknowledged would wait
    // for the peer's delayed ACK (up to 200 ms on Windows), the very latency the waker removes.
    tx.set_nodelay(true)?;
    let ours = tx.local_addr()?;
    // Any local program could connect to the port in between: take our own end only (it is
    // already in the backlog, so this ends).
    loop {
        let (rx, peer) = listener.accept()?;
        if peer == ours {
            return Ok((tx, rx));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;

    /// Answers "ok"; a request for `/hold` first waits until the test lets it go.
    struct Gate {
        hold: Receiver<()>,
    }

    impl Handler for Gate {
        fn serve(&self, req: &Request, mut conn: Conn) -> Outcome {
            if req.path == "/hold" {
                let _ = self.hold.recv_timeout(Duration::from_secs(30));
            }
            if req.path == "/big" {
                let head = b"HTTP/1.1 200 OK\r\nContent-Length: 33554432\r\n\r\n";
                let ok = conn.write_all(head).is_ok() && conn.write_all(&vec![0; 32 << 20]).is_ok();
                return if ok {
                    Outcome::KeepAlive(conn)
                } else {
                    Outcome::Close(conn)
                };
            }
            if conn.body_pending() && conn.read_body().is_err() {
                return Outcome::Close(conn);
            }
            let keep_alive = req.keep_alive;
            let bytes = Response::new(200, "text/plain", "ok")
                .encode(req.is_head(), req.connection_header(keep_alive));
            match conn.write_all(&bytes) {
                Ok(()) if keep_alive => Outcome::KeepAlive(conn),
                _ => Outcome::Close(conn),
            }
        }

        fn refusal(&self, status: u16, why: &str) -> Response {
            Response::new(status, "text/plain", why.to_string())
        }
    }

    fn start(workers: usize, max_waiting: usize) -> (Front, SocketAddr, Sender<()>) {
        start_with(workers, max_waiting, Duration::from_secs(10))
    }

    fn start_with(
        workers: usize,
        max_waiting: usize,
        io_timeout: Duration,
    ) -> (Front, SocketAddr, Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (release, hold) = bounded(16);
        let limits = Limits {
            name: "test",
            workers,
            max_head: 4096,
            head_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            io_timeout,
            max_waiting,
            retry_after_secs: 7,
        };
        let front = Front::start(listener, limits, Arc::new(Gate { hold })).unwrap();
        (front, addr, release)
    }

    /// Sends `raw` (from another thread, so a large body cannot block the test) and reads
    /// until the server closes.
    fn exchange(addr: SocketAddr, raw: Vec<u8>) -> io::Result<String> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut writer = s.try_clone()?;
        let sending = thread::spawn(move || writer.write_all(&raw));
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        let _ = sending.join();
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    const PROMPT: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

    #[test]
    fn more_slow_heads_than_the_stage_holds_do_not_lock_out_a_prompt_client() {
        let (front, addr, _release) = start(4, 16);
        let slow: Vec<TcpStream> = (0..40)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
                s
            })
            .collect();
        let start = Instant::now();
        while front.open_connections() < 16 {
            assert!(start.elapsed() < Duration::from_secs(10));
            thread::sleep(Duration::from_millis(10));
        }
        assert!(front.open_connections() <= 16, "the stage holds at most 16");
        let answer = exchange(addr, PROMPT.to_vec()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
        drop(slow);
    }

    #[test]
    fn a_keep_alive_connection_handed_back_is_read_at_once() {
        // The stage watches a connection again only once its worker gives it back and wakes
        // the stage's poll; unwoken, each next request would wait for the stage's next
        // deadline (a 200 ms tick at best, 5 s on an idle server).
        let (_front, addr, _release) = start(2, 64);
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let start = Instant::now();
        for _ in 0..50 {
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let mut reply = Vec::new();
            let mut chunk = [0u8; 512];
            while !reply.ends_with(b"\r\n\r\nok") {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&reply));
                reply.extend_from_slice(&chunk[..n]);
            }
            assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n"));
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "50 requests on one connection took {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_request_refused_for_want_of_a_worker_is_read_first_and_gets_its_503() {
        let (_front, addr, release) = start(1, 64);
        // One request holds the only worker, one waits in the queue (room for one).
        let held = thread::spawn(move || {
            exchange(
                addr,
                b"GET /hold HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
            )
        });
        thread::sleep(Duration::from_millis(300));
        let queued = thread::spawn(move || exchange(addr, PROMPT.to_vec()));
        thread::sleep(Duration::from_millis(100));
        // The third comes with a body bigger than any socket buffer: it is read (drained)
        // before the connection closes, so the 503 arrives instead of a reset.
        let mut raw = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n".to_vec();
        raw.resize(raw.len() + 2_000_000, b'x');
        let refused = exchange(addr, raw).expect("no reset");
        assert!(
            refused.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{refused}"
        );
        assert!(refused.contains("\r\nRetry-After: 7\r\n"), "{refused}");
        assert!(refused.contains("\r\nConnection: close\r\n"), "{refused}");
        // The queued one waited its second, then was told to come back too.
        let queued = queued.join().unwrap().unwrap();
        assert!(queued.starts_with("HTTP/1.1 503"), "{queued}");
        release.send(()).unwrap();
        let held = held.join().unwrap().unwrap();
        assert!(held.starts_with("HTTP/1.1 200"), "{held}");
        // With the worker free again, the next one is served.
        assert!(exchange(addr, PROMPT.to_vec())
            .unwrap()
            .starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn a_head_not_complete_in_time_gets_408_and_stop_closes_everything() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (_release, hold) = bounded(1);
        let limits = Limits {
            name: "test",
            workers: 2,
            max_head: 4096,
            head_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(10),
            max_waiting: 64,
            retry_after_secs: 1,
        };
        let mut front = Front::start(listener, limits, Arc::new(Gate { hold })).unwrap();
        let answer = exchange(addr, b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec()).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{answer}"
        );
        let mut idle = TcpStream::connect(addr).unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 256];
        assert!(
            idle.read(&mut buf).unwrap() > 0,
            "answered, then kept alive"
        );
        let start = Instant::now();
        front.stop();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(front.open_connections(), 0);
        assert!(
            matches!(idle.read(&mut buf), Ok(0) | Err(_)),
            "closed on stop"
        );
        assert!(TcpStream::connect(addr).is_err(), "no longer listening");
    }

    #[test]
    fn at_the_cap_a_client_stuck_on_its_step_gives_way_to_a_waiting_request() {
        // One worker, and a long io_timeout: only the cut can free it in time.
        let (_front, addr, _release) = start_with(1, 64, Duration::from_secs(120));
        let mut stuck = TcpStream::connect(addr).unwrap();
        stuck
            .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut first = [0u8; 12];
        stuck
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stuck.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        // It stops reading; after CUT_AFTER it is the one to give way.
        thread::sleep(CUT_AFTER + Duration::from_secs(1));
        let answer = exchange(addr, PROMPT.to_vec()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        // The stuck client was reset, not left to drain megabytes.
        assert_eq!(sys::how_it_ended(&mut stuck), "reset");
    }
}
