//! `postflow run`.

use std::process::ExitCode;
use std::time::Duration;

use super::pipeline::{NotStarted, Pipeline, Scope, Stop};
use super::{EXIT_FAILURE, EXIT_OK};
use crate::config::Config;

/// `postflow run`: the pipeline, until Ctrl-C, SIGTERM or another stop request (`shutdown`).
pub fn run(config: Config) -> ExitCode {
    let pipeline = match Pipeline::start(&config, Scope::Everything) {
        Ok(p) => p,
        Err(NotStarted::AlreadyRunning(e)) => {
            // Not an error: cron starts us every minute and this is the normal answer.
            println!("{e}");
            // A service's stdout goes nowhere; its log file is read.
            if super::service::running_as_service() {
                log::warn!("{e}: this service instance stops; stop the other one first");
            }
            return ExitCode::from(EXIT_OK);
        }
        Err(NotStarted::Exit(code)) => return code,
    };
    let code = match pipeline.wait(Duration::from_secs(3600), || None) {
        Stop::Signal | Stop::Finished(_) => EXIT_OK,
        Stop::ThreadDied => EXIT_FAILURE,
    };
    pipeline.shut_down(code)
}
