//! The uploader: worker threads that take jobs from the queue and get them into Frame.io.

pub mod parts;
