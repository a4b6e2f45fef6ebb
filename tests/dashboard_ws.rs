//! The WebSocket as a page sees it: a snapshot, then numbered events; a cap on viewers; a
//! viewer that stops reading costs nothing; garbage from a page is ignored.

mod dashboard_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dashboard_support::{read_reply, Pipeline, Viewer};
use postflow::events::{ComponentState, Event};
use postflow::queue::AttemptUpdate;
use serde_json::Value;
use tungstenite::Message;

/// Plays one upload of `id` through the worker side of the queue and the file server.
fn upload(p: &Pipeline, id: u64, size: u64) {
    let job = p.take_job();
    assert_eq!(job.id, id);
    p.report(AttemptUpdate::Started { id, mode: "remote" });
    // The file server only serves a job that is uploading.
    let start = Instant::now();
    while p.get("/api/jobs?state=uploading").json()["total"] != 1 {
        assert!(start.elapsed() < Duration::from_secs(10), "never uploading");
        std::thread::sleep(Duration::from_millis(10));
    }
    for covered in [size / 4, size / 2, size] {
        p.transfer(id, covered, size);
    }
    p.report(AttemptUpdate::FileCreated {
        id,
        file_id: "file-1".into(),
        unknown_file: false,
    });
    p.report(AttemptUpdate::Processing {
        id,
        all_in_ms: postflow::queue::now_ms(),
        verified: Some(postflow::ledger::Verified::PartsMd5),
    });
    p.report(AttemptUpdate::Done {
        id,
        file_id: "file-1".into(),
        view_url: Some("https://next.frame.io/view/file-1".into()),
        verified: None,
        sha256: None,
    });
}

#[test]
fn a_viewer_gets_a_snapshot_then_consecutive_ids_as_a_job_moves_through_its_states() {
    let p = Pipeline::start("ws-story");
    let mut viewer = p.ws();
    let first = viewer.next();
    assert_eq!(first["id"], 1);
    assert_eq!(first["type"], "snapshot");
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert!(first["data"]["jobs"].as_array().unwrap().is_empty());
    assert!(first["data"]["queue"]["counts"].is_object());

    let id = p.add_file("A001_C002.mov", 4000);
    upload(&p, id, 4000);
    let seen = viewer.until("job", |d| d["state"] == "done");

    let ids: Vec<u64> = seen.iter().map(|m| m["id"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (2..2 + ids.len() as u64).collect();
    assert_eq!(ids, expected, "ids go up by one");
    let states: Vec<&str> = seen
        .iter()
        .filter(|m| m["type"] == "job" && m["data"]["id"] == id)
        .map(|m| m["data"]["state"].as_str().unwrap())
        .collect();
    for s in ["queued", "uploading", "processing", "done"] {
        assert!(states.contains(&s), "{s} in {states:?}");
    }
    let transfers: Vec<&Value> = seen.iter().filter(|m| m["type"] == "transfer").collect();
    assert!(!transfers.is_empty(), "progress is pushed");
    let last = transfers.last().unwrap();
    assert_eq!(
        last["data"]["covered"], 4000,
        "the last transfer always goes out"
    );
    assert_eq!(last["data"]["name"], "A001_C002.mov");
    let done = &seen.last().unwrap()["data"];
    assert_eq!(done["view_url"], "https://next.frame.io/view/file-1");
    assert_eq!(done["name"], "A001_C002.mov");

    // A new viewer's snapshot has the job as it is now.
    let snap = p.ws().next();
    assert_eq!(snap["id"], 1);
    assert_eq!(snap["data"]["jobs"][0]["state"], "done");
    assert_eq!(snap["data"]["queue"]["counts"]["done"], 1);
}

#[test]
fn the_seventeenth_viewer_is_refused_and_the_others_carry_on() {
    let p = Pipeline::start("ws-cap");
    let mut viewers: Vec<Viewer> = (0..16).map(|_| p.ws()).collect();
    for v in &mut viewers {
        assert_eq!(v.next()["type"], "snapshot");
    }
    // By hand rather than through tungstenite: its error carries only the body bytes that
    // happened to arrive with the head, so asserting on it would race the server's writes.
    let refused = read_reply(&mut ws_handshake(&p));
    assert_eq!(refused.status, 503, "{}", refused.head);
    assert!(
        refused.text().contains("too many viewers"),
        "{}",
        refused.text()
    );
    p.hub.publish(Event::Component {
        name: "watcher",
        state: ComponentState::Up,
        detail: "still here".into(),
    });
    for v in &mut viewers {
        let m = v.next();
        assert_eq!(m["id"], 2);
        assert_eq!(m["data"]["detail"], "still here");
    }
    // A place frees up when a viewer leaves.
    let mut leaving = viewers.pop().unwrap();
    leaving.ws.close(None).unwrap();
    let _ = leaving.ws.read();
    let start = Instant::now();
    loop {
        match Viewer::try_connect(p.addr, &[]) {
            Ok(mut v) => {
                assert_eq!(v.next()["type"], "snapshot");
                break;
            }
            Err(_) if start.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("no place after a viewer left: {e}"),
        }
    }
}

/// Sends a WebSocket upgrade request by hand; the answer is left unread.
fn ws_handshake(p: &Pipeline) -> TcpStream {
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        p.addr
    )
    .unwrap();
    s
}

/// A WebSocket handshake by hand, after which the test never reads the socket.
fn deaf_viewer(p: &Pipeline) -> TcpStream {
    let mut s = ws_handshake(p);
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    s
}

#[test]
fn a_viewer_that_never_reads_does_not_slow_the_pipeline() {
    let p = Pipeline::start("ws-deaf");
    let _deaf = deaf_viewer(&p);
    let mut good = p.ws();
    good.next();
    let reader = std::thread::spawn(move || {
        good.until("job", |d| d["state"] == "done");
        good
    });
    // Far more than the socket buffers hold: the deaf viewer's writes time out.
    let line = "x".repeat(64 * 1024);
    let start = Instant::now();
    for i in 0..200 {
        p.hub.publish(Event::Log {
            level: log::Level::Info,
            target: "flood".into(),
            message: format!("{i} {line}"),
        });
    }
    let id = p.add_file("B002.mov", 1000);
    upload(&p, id, 1000);
    let _good = reader.join().expect("the reading viewer saw the job done");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    // The deaf one was dropped; the good one is still counted.
    let start = Instant::now();
    loop {
        let viewers = p.get("/api/status").json()["viewers"].as_u64().unwrap();
        if viewers == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{viewers} viewers, expected the deaf one dropped (write timeout 5 s)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn garbage_from_a_page_is_ignored() {
    let p = Pipeline::start("ws-garbage");
    let mut v = p.ws();
    v.next();
    v.ws.send(Message::text("not json {{{")).unwrap();
    v.ws.send(Message::text(r#"{"type":"retry","id":"nope"}"#))
        .unwrap();
    v.ws.send(Message::binary(vec![0xff, 0x00, 0x13])).unwrap();
    v.ws.send(Message::Ping(b"hi".to_vec().into())).unwrap();
    p.hub.publish(Event::Component {
        name: "tunnel",
        state: ComponentState::Down,
        detail: "restarting".into(),
    });
    let m = v.until("component", |_| true).pop().unwrap();
    assert_eq!(m["id"], 2);
    assert_eq!(m["data"]["state"], "down");
    assert_eq!(p.get("/health").status, 200);
}
