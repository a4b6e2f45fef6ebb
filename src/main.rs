//! postflow's command line. Reads like a table of contents: parse the arguments, load the
//! config, hand over to the command.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use postflow::cmd;
use postflow::cmd::service::ServiceCommand;

const USAGE: &str = "\
postflow: watches a folder and gets every finished export into Frame.io, exactly once.

Usage:
  postflow CONFIG            run the pipeline (same as `postflow run CONFIG`)
  postflow run CONFIG        run the pipeline until Ctrl-C or SIGTERM
  postflow auth CONFIG       sign in to Frame.io with your Adobe ID (prints a link, reads
                             the address the browser ends on) and save the tokens
  postflow check CONFIG      check the config, the Frame.io connection and the machine;
                             exit 0 only if all pass
  postflow status CONFIG     print the running instance's summary (exit 1 if none runs)
  postflow stop CONFIG       ask the running instance to stop in order (as Ctrl-C does)
                             and wait until it has stopped (exit 0 if none runs)
  postflow upload CONFIG PATH...
                             upload these files (inside a project's root) now: the
                             running instance queues them; when none runs, uploads them
                             itself and exits when they are done (exit 1 if one is not);
                             a path under no root refuses the command (exit 2)
  postflow service install CONFIG
                             Windows: install the service postflow (starts at boot;
                             needs an elevated prompt); Linux, macOS: print the systemd
                             unit or launchd agent for this binary and CONFIG
  postflow service uninstall Windows: stop and remove the service; elsewhere: print the
                             commands that remove the unit or agent
  postflow --version         print the version, the commit and the target
  postflow --help            print this help

CONFIG is a JSON file such as the config.json shipped with postflow; see README.md.
Exit codes: 0 ok (also: already running), 1 runtime failure, 2 bad usage or bad config.";

/// `postflow 0.1.0 (abc1234, x86_64-unknown-linux-gnu)`: enough for a bug report to name the
/// exact build. build.rs supplies the commit ("unknown" outside a git checkout) and target.
const VERSION: &str = concat!(
    "postflow ",
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("POSTFLOW_COMMIT"),
    ", ",
    env!("POSTFLOW_TARGET"),
    ")"
);

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run(PathBuf),
    Check(PathBuf),
    Status(PathBuf),
    Stop(PathBuf),
    Service(ServiceCommand),
    Auth(PathBuf),
    Upload(PathBuf, Vec<PathBuf>),
    Version,
    Help,
}

/// Parses the arguments (without the program name). The error is a sentence saying what to
/// type instead.
fn parse_args(args: &[OsString]) -> Result<Command, String> {
    let words: Vec<&str> = args.iter().map(|a| a.to_str().unwrap_or("")).collect();
    let one_config = |cmd: &str, rest: &[OsString]| match rest {
        [config] => Ok(PathBuf::from(config)),
        [] => Err(format!(
            "`{cmd}` needs a config file: postflow {cmd} config.json"
        )),
        _ => Err(format!(
            "`{cmd}` takes one config file, got {}: postflow {cmd} config.json",
            rest.len()
        )),
    };
    match words.as_slice() {
        [] => Err("missing config file: postflow config.json".into()),
        ["-h" | "--help" | "help", ..] => Ok(Command::Help),
        ["-V" | "--version" | "version", ..] => Ok(Command::Version),
        ["run", ..] => one_config("run", &args[1..]).map(Command::Run),
        ["check", ..] => one_config("check", &args[1..]).map(Command::Check),
        ["status", ..] => one_config("status", &args[1..]).map(Command::Status),
        ["auth", ..] => one_config("auth", &args[1..]).map(Command::Auth),
        ["stop", ..] => one_config("stop", &args[1..]).map(Command::Stop),
        ["service", "install", ..] => one_config("service install", &args[2..])
            .map(|c| Command::Service(ServiceCommand::Install(c))),
        ["service", "uninstall"] => Ok(Command::Service(ServiceCommand::Uninstall)),
        ["service", "uninstall", ..] => {
            Err("`service uninstall` takes no arguments: postflow service uninstall".into())
        }
        // The Windows Service Control Manager's entry point (docs/install.md), not in --help.
        ["service", "run", ..] => {
            one_config("service run", &args[2..]).map(|c| Command::Service(ServiceCommand::Run(c)))
        }
        ["service", ..] => {
            Err("`service` needs install or uninstall: postflow service install config.json".into())
        }
        ["upload", ..] => match &args[1..] {
            [config, paths @ ..] if !paths.is_empty() => Ok(Command::Upload(
                PathBuf::from(config),
                paths.iter().map(PathBuf::from).collect(),
            )),
            _ => Err(
                "`upload` needs a config file and files: postflow upload config.json \
                      clip.mov…"
                    .into(),
            ),
        },
        [flag, ..] if flag.starts_with('-') => Err(format!("unknown option {flag:?}")),
        [_] => Ok(Command::Run(PathBuf::from(&args[0]))),
        [word, ..] => Err(format!("unknown command {word:?}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postflow: {e}\nTry `postflow --help`.");
            return ExitCode::from(cmd::EXIT_USAGE);
        }
    };
    match command {
        Command::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("{VERSION}");
            ExitCode::SUCCESS
        }
        Command::Run(path) => match cmd::load_config(&path) {
            Ok(config) => cmd::run(config),
            Err(code) => code,
        },
        Command::Check(path) => match cmd::load_config(&path) {
            Ok(config) => cmd::check(config),
            Err(code) => code,
        },
        Command::Status(path) => match cmd::load_config(&path) {
            Ok(config) => cmd::status(&config),
            Err(code) => code,
        },
        Command::Stop(path) => match cmd::load_config(&path) {
            Ok(config) => cmd::stop(&config),
            Err(code) => code,
        },
        Command::Service(command) => cmd::service::service(command),
        Command::Auth(path) => match cmd::load_config(&path) {
            Ok(config) => cmd::auth(config),
            Err(code) => code,
        },
        Command::Upload(path, files) => match cmd::load_config(&path) {
            Ok(config) => cmd::upload(config, &files),
            Err(code) => code,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse_args(&args)
    }

    #[test]
    fn a_bare_config_path_runs() {
        assert_eq!(parse(&["c.json"]), Ok(Command::Run("c.json".into())));
        assert_eq!(parse(&["run", "c.json"]), Ok(Command::Run("c.json".into())));
        assert_eq!(
            parse(&["check", "c.json"]),
            Ok(Command::Check("c.json".into()))
        );
        assert_eq!(
            parse(&["status", "c.json"]),
            Ok(Command::Status("c.json".into()))
        );
        assert_eq!(
            parse(&["auth", "c.json"]),
            Ok(Command::Auth("c.json".into()))
        );
        assert!(parse(&["auth"])
            .unwrap_err()
            .contains("postflow auth config.json"));
        assert_eq!(
            parse(&["upload", "c.json", "a.mov", "b/c.mxf"]),
            Ok(Command::Upload(
                "c.json".into(),
                vec!["a.mov".into(), "b/c.mxf".into()]
            ))
        );
    }

    #[test]
    fn stop_and_service_commands() {
        assert_eq!(
            parse(&["stop", "c.json"]),
            Ok(Command::Stop("c.json".into()))
        );
        assert_eq!(
            parse(&["service", "install", "c.json"]),
            Ok(Command::Service(ServiceCommand::Install("c.json".into())))
        );
        assert_eq!(
            parse(&["service", "uninstall"]),
            Ok(Command::Service(ServiceCommand::Uninstall))
        );
        assert_eq!(
            parse(&["service", "run", "c.json"]),
            Ok(Command::Service(ServiceCommand::Run("c.json".into())))
        );
        assert!(parse(&["service"])
            .unwrap_err()
            .contains("postflow service install config.json"));
        assert!(parse(&["service", "install"])
            .unwrap_err()
            .contains("postflow service install config.json"));
        assert!(parse(&["service", "uninstall", "c.json"])
            .unwrap_err()
            .contains("takes no arguments"));
        assert!(parse(&["stop"])
            .unwrap_err()
            .contains("postflow stop config.json"));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert_eq!(parse(&["-h"]), Ok(Command::Help));
        assert_eq!(parse(&["--version"]), Ok(Command::Version));
        assert_eq!(parse(&["-V"]), Ok(Command::Version));
    }

    #[test]
    fn usage_errors_say_what_to_type() {
        assert!(parse(&[]).unwrap_err().contains("postflow config.json"));
        assert!(parse(&["run"])
            .unwrap_err()
            .contains("postflow run config.json"));
        assert!(parse(&["check", "a", "b"])
            .unwrap_err()
            .contains("one config file"));
        assert!(parse(&["--frobnicate"])
            .unwrap_err()
            .contains("unknown option"));
        assert!(parse(&["upload", "c.json"])
            .unwrap_err()
            .contains("postflow upload config.json clip.mov"));
        assert!(parse(&["frobnicate", "c.json"])
            .unwrap_err()
            .contains("unknown command"));
    }
}
