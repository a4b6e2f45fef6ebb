pub mod cloudflared;

pub fn placeholder() {}
