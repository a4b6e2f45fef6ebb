//! Small HTTP helpers for talking to the simulator the way a client would.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut r = r.expect("transport error talking to the simulator");
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    Answer {
        status: r.status().as_u16(),
        headers,
        body: r.body_mut().read_to_string().unwrap_or_default(),
    }
}

/// `GET base+path` with a bearer token (`""`: none).
pub fn get(base: &str, token: &str, path: &str) -> Answer {
    let mut req = agent().get(format!("{base}{path}"));
    if !token.is_empty() {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    answer(req.call())
}

pub fn post_json(base: &str, token: &str, path: &str, body: &Value) -> Answer {
    answer(
        agent()
            .post(format!("{base}{path}"))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes()),
    )
}

/// `PATCH` with a JSON body and extra headers (e.g. `api-version: experimental`).
pub fn patch_json(
    base: &str,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Answer {
    let mut req = agent()
        .patch(format!("{base}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    answer(req.send(body.to_string().as_bytes()))
}

pub fn delete(base: &str, token: &str, path: &str) -> Answer {
    answer(
        agent()
            .delete(format!("{base}{path}"))
            .header("Authorization", format!("Bearer {token}"))
            .call(),
    )
}

/// Form POST with optional extra headers.
pub fn post_form(url: &str, headers: &[(&str, &str)], form: &str) -> Answer {
    let mut req = agent()
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    answer(req.send(form.as_bytes()))
}

pub fn put(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut req = agent().put(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    answer(req.send(body))
}

/// Writes raw bytes to `base`'s socket and returns the raw reply (status line first).
pub fn raw(base: &str, request: &[u8]) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub fn path_and_query(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    &rest[rest.find('/').unwrap_or(rest.len())..]
}

/// A file created by `local_upload` in the project's root folder: its id, media type and
/// part URLs (size, url).
pub struct LocalUpload {
    pub id: String,
    pub media_type: Option<String>,
    pub urls: Vec<(u64, String)>,
}

/// Creates a local upload of `name` (`size` bytes) in the root folder, as a client would.
pub fn local_upload(sim: &sim::FrameIo, token: &str, name: &str, size: u64) -> LocalUpload {
    let path = format!(
        "/v4/accounts/{}/folders/{}/files/local_upload",
        sim.account_id(),
        sim.root_folder_id()
    );
    let r = post_json(
        sim.base_url(),
        token,
        &path,
        &serde_json::json!({"data":{"name":name,"file_size":size}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let d = &r.json()["data"];
    LocalUpload {
        id: d["id"].as_str().unwrap().to_string(),
        media_type: d["media_type"].as_str().map(str::to_string),
        urls: d["upload_urls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["size"].as_u64().unwrap(),
                    u["url"].as_str().unwrap().to_string(),
                )
            })
            .collect(),
    }
}
