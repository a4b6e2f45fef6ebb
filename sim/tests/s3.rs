//! Presigned part PUTs: every header rule S3 enforces, parallel parts, assembly and hashing.

mod common;

use common::{local_upload, path_and_query, put, raw};
use sha2::{Digest, Sha256};
use sim::{FrameIo, Options};
use std::time::Duration;

fn sim_with_parts(part_size: u64) -> (FrameIo, String) {
    let sim = FrameIo::start(Options::default()).unwrap();
    sim.set_faults(|f| {
        f.part_size = part_size;
        f.single_part_below = 0;
        f.transcode_delay_ms = 200;
    });
    let t = sim.login_tokens().access_token;
    (sim, t)
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

const OK_HEADERS: [(&str, &str); 2] = [
    ("Content-Type", "video/quicktime"),
    ("x-amz-acl", "private"),
];

fn xml_code(body: &str) -> &str {
    let s = body.find("<Code>").expect("S3 XML error") + 6;
    &body[s..s + body[s..].find("</Code>").unwrap()]
}

#[test]
fn eight_parts_in_parallel_assemble_into_the_right_bytes() {
    let (sim, t) = sim_with_parts(100_000);
    let data = bytes(777_777, 7);
    let up = local_upload(&sim, &t, "SQ01_UNDLM_00412_v001.mov", data.len() as u64);
    assert_eq!(up.media_type.as_deref(), Some("video/quicktime"));
    assert_eq!(up.urls.len(), 8);
    assert_eq!(up.urls.iter().map(|u| u.0).sum::<u64>(), data.len() as u64);
    for (i, (_, url)) in up.urls.iter().enumerate() {
        assert!(
            url.contains(&format!("/s3/parts/{}/part_{}?", up.id, i + 1)),
            "{url}"
        );
        assert!(url.contains("X-Amz-SignedHeaders=content-type%3Bhost%3Bx-amz-acl"));
    }
    std::thread::scope(|s| {
        let mut offset = 0usize;
        for (size, url) in &up.urls {
            let chunk = &data[offset..offset + *size as usize];
            offset += *size as usize;
            s.spawn(move || {
                let r = put(url, &OK_HEADERS, chunk);
                assert_eq!(r.status, 200, "{}", r.body);
                assert!(r.body.is_empty());
                let etag = r.header("etag").expect("ETag");
                assert!(
                    etag.starts_with('"') && etag.ends_with('"') && etag.len() == 34,
                    "{etag}"
                );
            });
        }
    });
    let f = sim.wait_for_file(&up.id, Duration::from_secs(10)).unwrap();
    assert!(f.upload_complete, "{f:?}");
    assert_eq!(f.sha256.as_deref(), Some(sha(&data).as_str()));
    assert_eq!(f.bytes_received, data.len() as u64);
    assert_eq!(f.status, "uploaded");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sim.file(&up.id).unwrap().status, "transcoded");
    let p = &sim.by_path()["SQ01_UNDLM_00412_v001.mov"];
    assert_eq!((p.size, p.copies, p.complete), (777_777, 1, 1));

    let puts = sim.s3_puts();
    assert_eq!(puts.len(), 8);
    for p in &puts {
        assert_eq!(p.status, 200);
        assert_eq!(p.header("content-type"), Some("video/quicktime"));
        assert_eq!(p.header("x-amz-acl"), Some("private"));
        assert_eq!(
            p.header("content-length"),
            Some(p.body_len.to_string().as_str())
        );
        assert_eq!(p.header("authorization"), None);
    }
}

#[test]
fn missing_content_length_is_411() {
    let (sim, t) = sim_with_parts(1000);
    let up = local_upload(&sim, &t, "a.mov", 10);
    let req = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nContent-Type: video/quicktime\r\nx-amz-acl: private\r\nConnection: close\r\n\r\n",
        path_and_query(&up.urls[0].1)
    );
    let reply = raw(sim.base_url(), req.as_bytes());
    assert!(reply.starts_with("HTTP/1.1 411"), "{reply}");
    assert_eq!(xml_code(&reply), "MissingContentLength");
}

#[test]
fn chunked_transfer_encoding_is_411() {
    let (sim, t) = sim_with_parts(1000);
    let up = local_upload(&sim, &t, "a.mov", 10);
    let req = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nContent-Type: video/quicktime\r\nx-amz-acl: private\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
        path_and_query(&up.urls[0].1)
    );
    let reply = raw(sim.base_url(), req.as_bytes());
    assert!(reply.starts_with("HTTP/1.1 411"), "{reply}");
    assert_eq!(xml_code(&reply), "MissingContentLength");
    assert!(!sim.file(&up.id).unwrap().upload_complete);
}

#[test]
fn wrong_content_type_or_acl_is_signature_does_not_match() {
    let (sim, t) = sim_with_parts(1000);
    let up = local_upload(&sim, &t, "a.mov", 10);
    let url = &up.urls[0].1;
    let body = bytes(10, 1);
    for headers in [
        vec![("Content-Type", "video/mp4"), ("x-amz-acl", "private")],
        vec![
            ("Content-Type", "application/octet-stream"),
            ("x-amz-acl", "private"),
        ],
        vec![("Content-Type", "video/quicktime")],
        vec![
            ("Content-Type", "video/quicktime"),
            ("x-amz-acl", "public-read"),
        ],
        vec![("x-amz-acl", "private")],
    ] {
        let r = put(url, &headers, &body);
        assert_eq!(r.status, 403, "{headers:?}");
        assert_eq!(xml_code(&r.body), "SignatureDoesNotMatch");
    }
    assert!(!sim.file(&up.id).unwrap().upload_complete);
    assert_eq!(put(url, &OK_HEADERS, &body).status, 200);
}

#[test]
fn a_tampered_url_or_an_authorization_header_is_refused() {
    let (sim, t) = sim_with_parts(1000);
    let up = local_upload(&sim, &t, "a.mov", 10);
    let url = &up.urls[0].1;
    let tampered = url.replace("X-Amz-Expires=86400", "X-Amz-Expires=999999");
    let r = put(&tampered, &OK_HEADERS, &bytes(10, 1));
    assert_eq!(
        (r.status, xml_code(&r.body)),
        (403, "SignatureDoesNotMatch")
    );
    let r = put(
        url,
        &[
            OK_HEADERS[0],
            OK_HEADERS[1],
            ("Authorization", "Bearer abc"),
        ],
        &bytes(10, 1),
    );
    assert_eq!((r.status, xml_code(&r.body)), (400, "InvalidArgument"));
}

#[test]
fn an_expired_url_is_access_denied() {
    let (sim, t) = sim_with_parts(1000);
    sim.set_faults(|f| f.part_url_lifetime_secs = 1);
    let up = local_upload(&sim, &t, "a.mov", 10);
    std::thread::sleep(Duration::from_millis(2100));
    let r = put(&up.urls[0].1, &OK_HEADERS, &bytes(10, 1));
    assert_eq!(r.status, 403);
    assert_eq!(xml_code(&r.body), "AccessDenied");
    assert!(r.body.contains("Request has expired"));
}

#[test]
fn a_body_that_is_not_the_part_size_is_400() {
    let (sim, t) = sim_with_parts(1000);
    let up = local_upload(&sim, &t, "a.mov", 10);
    let url = &up.urls[0].1;
    let r = put(url, &OK_HEADERS, &bytes(9, 1));
    assert_eq!((r.status, xml_code(&r.body)), (400, "IncompleteBody"));
    let r = put(url, &OK_HEADERS, &bytes(11, 1));
    assert_eq!((r.status, xml_code(&r.body)), (400, "EntityTooLarge"));
    // Content-Length promises 10 bytes, the connection delivers 4 and closes.
    let req = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nContent-Type: video/quicktime\r\nx-amz-acl: private\r\nContent-Length: 10\r\n\r\nabcd",
        path_and_query(url)
    );
    let addr = sim.base_url().trim_start_matches("http://");
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(!sim.file(&up.id).unwrap().upload_complete);
    let last = sim.s3_puts().pop().unwrap();
    assert_ne!(last.status, 200, "{last:?}");
}

#[test]
fn a_re_put_part_replaces_the_earlier_bytes() {
    let (sim, t) = sim_with_parts(100);
    let data = bytes(250, 3);
    let up = local_upload(&sim, &t, "b.mov", 250);
    assert_eq!(
        up.urls.iter().map(|u| u.0).collect::<Vec<_>>(),
        [84, 84, 82]
    );
    assert_eq!(put(&up.urls[0].1, &OK_HEADERS, &bytes(84, 99)).status, 200);
    assert_eq!(put(&up.urls[0].1, &OK_HEADERS, &data[..84]).status, 200);
    assert!(!sim.file(&up.id).unwrap().upload_complete, "parts missing");
    assert_eq!(put(&up.urls[2].1, &OK_HEADERS, &data[168..]).status, 200);
    assert_eq!(put(&up.urls[1].1, &OK_HEADERS, &data[84..168]).status, 200);
    let f = sim.wait_for_file(&up.id, Duration::from_secs(5)).unwrap();
    assert!(f.upload_complete);
    assert_eq!(f.sha256.unwrap(), sha(&data));
}

#[test]
fn with_null_media_type_parts_must_be_octet_stream() {
    let (sim, t) = sim_with_parts(1000);
    sim.set_faults(|f| f.media_type_null = true);
    let up = local_upload(&sim, &t, "c.mov", 10);
    assert_eq!(up.media_type, None);
    let r = put(&up.urls[0].1, &OK_HEADERS, &bytes(10, 0));
    assert_eq!(r.status, 403);
    let r = put(
        &up.urls[0].1,
        &[
            ("Content-Type", "application/octet-stream"),
            ("x-amz-acl", "private"),
        ],
        &bytes(10, 0),
    );
    assert_eq!(r.status, 200);
    assert!(
        sim.wait_for_file(&up.id, Duration::from_secs(5))
            .unwrap()
            .upload_complete
    );
}

#[test]
fn a_deleted_file_refuses_its_parts() {
    let (sim, t) = sim_with_parts(1000);
    let up = local_upload(&sim, &t, "d.mov", 10);
    let del = common::delete(
        sim.base_url(),
        &t,
        &format!("/v4/accounts/{}/files/{}", sim.account_id(), up.id),
    );
    assert_eq!(del.status, 204);
    let r = put(&up.urls[0].1, &OK_HEADERS, &bytes(10, 0));
    assert_eq!((r.status, xml_code(&r.body)), (404, "NoSuchUpload"));
}

#[test]
fn content_md5_is_checked_as_s3_does_and_the_etag_is_the_md5() {
    let (sim, t) = sim_with_parts(100_000);
    let up = local_upload(&sim, &t, "abc.mov", 3);
    let url = &up.urls[0].1;
    let with = |md5: &'static str| {
        let mut h = OK_HEADERS.to_vec();
        h.push(("Content-MD5", md5));
        h
    };
    // The digest of "" for the body "abc": refused, the part not kept.
    let r = put(url, &with("1B2M2Y8AsgTpgAmY7PhCfg=="), b"abc");
    assert_eq!(
        (r.status, xml_code(&r.body)),
        (400, "BadDigest"),
        "{}",
        r.body
    );
    let r = put(url, &with("not-base64"), b"abc");
    assert_eq!((r.status, xml_code(&r.body)), (400, "InvalidDigest"));
    // base64 of 15 bytes is no MD5 either.
    let r = put(url, &with("AAAAAAAAAAAAAAAAAAAA"), b"abc");
    assert_eq!((r.status, xml_code(&r.body)), (400, "InvalidDigest"));
    assert!(!sim.file(&up.id).unwrap().upload_complete);
    let r = put(url, &with("kAFQmDzST7DWlj99KOF/cg=="), b"abc");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("etag"),
        Some("\"900150983cd24fb0d6963f7d28e17f72\"")
    );
    assert!(
        sim.wait_for_file(&up.id, Duration::from_secs(10))
            .unwrap()
            .upload_complete
    );
}

#[test]
fn a_corrupted_part_is_refused_with_content_md5_and_kept_wrong_without() {
    let (sim, t) = sim_with_parts(100_000);
    sim.set_faults(|f| f.s3_corrupt_every = 1);
    let up = local_upload(&sim, &t, "abc.mov", 3);
    let url = &up.urls[0].1;
    let mut h = OK_HEADERS.to_vec();
    h.push(("Content-MD5", "kAFQmDzST7DWlj99KOF/cg=="));
    let r = put(url, &h, b"abc");
    assert_eq!((r.status, xml_code(&r.body)), (400, "BadDigest"));
    // Without the header S3 cannot tell: it keeps what it got, and its ETag says so.
    let r = put(url, &OK_HEADERS, b"abc");
    assert_eq!(r.status, 200);
    assert_ne!(
        r.header("etag"),
        Some("\"900150983cd24fb0d6963f7d28e17f72\"")
    );
    let f = sim.wait_for_file(&up.id, Duration::from_secs(10)).unwrap();
    assert_ne!(f.sha256.as_deref(), Some(sha(b"abc").as_str()));
}

#[test]
fn urls_signed_without_content_md5_refuse_it() {
    let (sim, t) = sim_with_parts(100_000);
    sim.set_faults(|f| f.s3_refuse_content_md5 = true);
    let up = local_upload(&sim, &t, "abc.mov", 3);
    let url = &up.urls[0].1;
    let mut h = OK_HEADERS.to_vec();
    h.push(("Content-MD5", "kAFQmDzST7DWlj99KOF/cg=="));
    let r = put(url, &h, b"abc");
    assert_eq!(
        (r.status, xml_code(&r.body)),
        (403, "SignatureDoesNotMatch")
    );
    assert_eq!(put(url, &OK_HEADERS, b"abc").status, 200);
}
