//! Stand-ins for the services postflow talks to, for tests and the demo.
//!
//! [`FrameIo`] serves Adobe IMS, Frame.io v4 and S3 presigned part uploads on one local
//! HTTP server, faithful to `reference/frameio_v4_contract.md`, with fault knobs and an
//! inspection API. [`cloudflared`] is the library side of the `fake-cloudflared` binary.
// Only the signal handling of fake-cloudflared (sim/src/cloudflared/signals.rs) needs unsafe.
#![deny(unsafe_code)]

pub mod cloudflared;
pub mod frameio;
mod util;

pub use frameio::{
    part_sizes, CreateCount, DeliveryRecord, DownloadRecord, Faults, FetchMode, FetchRecord,
    FileView, FolderView, FrameIo, Options, PathEntry, ProjectView, RetryHint, S3PutRecord,
    SimProject, StackKnobs, StackView, TokenRecord, Tokens, UploadMode, WebhookView,
    STATUS_OPTIONS,
};
