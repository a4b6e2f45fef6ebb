//! The Windows service: registered with the Service Control Manager by `service install`,
//! started by it as `"<exe>" service run "<config>"` at boot (no one needs to log in), run as
//! LocalSystem unless the administrator picks another account, restarted when it fails.
//! Stop and shutdown feed the same ordered stop as Ctrl-C (`shutdown::request`).
//!
//! Unsafe: only the FFI entry point `define_windows_service!` generates for the SCM, which
//! turns the SCM's argument array into strings as the crate documents.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use windows_service::service_dispatcher;
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

use super::{AS_SERVICE, NAME};
use crate::cmd::pipeline::SHUTDOWN_DEADLINE;
use crate::cmd::{load_config, EXIT_FAILURE, EXIT_USAGE};
use crate::shutdown::{self, StopRequested};

const DISPLAY_NAME: &str = "postflow (Frame.io uploads)";
const DESCRIPTION: &str =
    "Watches a folder and gets every finished video export into Frame.io, exactly once.";

/// How long the SCM should allow for our stop: the pipeline's shutdown deadline (20 s, which
/// covers cloudflared's 15 s grace), and some room.
const STOP_WAIT_HINT: Duration = Duration::from_secs(SHUTDOWN_DEADLINE.as_secs() + 10);
/// How long `uninstall` waits for a running service to stop.
const UNINSTALL_STOP_WAIT: Duration = Duration::from_secs(60);

/// Win32 errors we explain.
const ERROR_ACCESS_DENIED: i32 = 5;
const ERROR_SERVICE_DOES_NOT_EXIST: i32 = 1060;
const ERROR_SERVICE_EXISTS: i32 = 1073;
const ERROR_FAILED_SERVICE_CONTROLLER_CONNECT: i32 = 1063;

/// The config the SCM started us with, for `service_main` (which gets the service's own
/// arguments, not the process's).
static CONFIG: OnceLock<PathBuf> = OnceLock::new();

/// "service install: CreateService: …"; a denied access says what to do about it.
fn scm_error(action: &str, call: &str, e: windows_service::Error) -> String {
    match e {
        windows_service::Error::Winapi(io) if io.raw_os_error() == Some(ERROR_ACCESS_DENIED) => {
            format!("{action} needs an elevated (Administrator) prompt: {call}: {io}")
        }
        windows_service::Error::Winapi(io) => format!("{action}: {call}: {io}"),
        other => format!("{action}: {call}: {other}"),
    }
}

fn os_error(e: &windows_service::Error) -> Option<i32> {
    match e {
        windows_service::Error::Winapi(io) => io.raw_os_error(),
        _ => None,
    }
}

/// What the SCM runs: this binary with `service run` and the absolute config path.
fn service_info(exe: &Path, config: &Path) -> ServiceInfo {
    ServiceInfo {
        name: NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe.to_path_buf(),
        launch_arguments: vec!["service".into(), "run".into(), config.into()],
        dependencies: vec![],
        // LocalSystem; docs/install.md says when and how to pick an account that can read a
        // share.
        account_name: None,
        account_password: None,
    }
}

/// Restart 10 s after a failure, up to three times; a day without failure starts the count
/// again.
fn recovery() -> ServiceFailureActions {
    let restart = ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(10),
    };
    ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart; 3]),
    }
}

pub(super) fn install(exe: &Path, config: &Path, log: &Path) -> Result<String, String> {
    const ACTION: &str = "service install";
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .map_err(|e| scm_error(ACTION, "OpenSCManager", e))?;
    let service = manager
        .create_service(
            &service_info(exe, config),
            ServiceAccess::CHANGE_CONFIG | ServiceAccess::DELETE,
        )
        .map_err(|e| {
            if os_error(&e) == Some(ERROR_SERVICE_EXISTS) {
                format!(
                    "{ACTION}: a service named {NAME} is already installed; to change it, \
                     `postflow service uninstall` first"
                )
            } else {
                scm_error(ACTION, "CreateService", e)
            }
        })?;
    // A service that restarts on failure is half the point: without it, remove the service
    // rather than leave one that dies for good on the first crash.
    let configured = service
        .set_description(DESCRIPTION)
        .map_err(|e| scm_error(ACTION, "ChangeServiceConfig2 (description)", e))
        .and_then(|()| {
            service
                .update_failure_actions(recovery())
                .map_err(|e| scm_error(ACTION, "ChangeServiceConfig2 (recovery)", e))
        });
    if let Err(e) = configured {
        let _ = service.delete();
        return Err(e);
    }
    // A stop with a non-zero exit code (a thread died) counts as a failure too. Without it
    // (Wine has no such setting) crashes still restart the service: say so, keep it.
    let non_crash = match service.set_failure_actions_on_non_crash_failures(true) {
        Ok(()) => String::new(),
        Err(e) => format!(
            "warning: only a crash restarts it, not a stop with an error: {}\n",
            scm_error(ACTION, "ChangeServiceConfig2 (failure actions flag)", e)
        ),
    };
    Ok(format!(
        "installed the service {NAME} ({DISPLAY_NAME}): starts at boot as LocalSystem and runs\n  \
         \"{}\" service run \"{}\"\n\
         After a failure it restarts in 10 s, three times at most (counted over a day).\n\
         Start it now:  sc.exe start {NAME}\n\
         Its log:       {}\n\
         A watch folder on a share or LucidLink needs its UNC path and an account that can\n\
         read it (docs/install.md, \"Windows service\").\n{non_crash}",
        exe.display(),
        config.display(),
        log.display()
    ))
}

pub(super) fn uninstall() -> Result<String, String> {
    const ACTION: &str = "service uninstall";
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| scm_error(ACTION, "OpenSCManager", e))?;
    let service = match manager.open_service(
        NAME,
        ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
    ) {
        Ok(s) => s,
        Err(e) if os_error(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => {
            return Ok(format!("no service named {NAME} is installed\n"));
        }
        Err(e) => return Err(scm_error(ACTION, "OpenService", e)),
    };
    let status = service
        .query_status()
        .map_err(|e| scm_error(ACTION, "QueryServiceStatus", e))?;
    let mut stopped = "";
    if status.current_state != ServiceState::Stopped {
        if status.current_state != ServiceState::StopPending {
            service
                .stop()
                .map_err(|e| scm_error(ACTION, "ControlService (stop)", e))?;
        }
        let deadline = Instant::now() + UNINSTALL_STOP_WAIT;
        loop {
            let state = service
                .query_status()
                .map_err(|e| scm_error(ACTION, "QueryServiceStatus", e))?
                .current_state;
            if state == ServiceState::Stopped {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{ACTION}: the service did not stop within {}s; try again, or end \
                     postflow.exe in Task Manager",
                    UNINSTALL_STOP_WAIT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        stopped = "stopped and ";
    }
    service
        .delete()
        .map_err(|e| scm_error(ACTION, "DeleteService", e))?;
    Ok(format!("{stopped}removed the service {NAME}\n"))
}

/// `postflow service run CONFIG`: hands this thread to the SCM's dispatcher, which calls
/// `service_main` on a thread of its own and returns once the service has stopped.
pub(super) fn run(config: PathBuf) -> ExitCode {
    let _ = CONFIG.set(config);
    match service_dispatcher::start(NAME, ffi_service_main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if os_error(&e) == Some(ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) => {
            eprintln!(
                "postflow: `service run` is how the Service Control Manager starts the installed \
                 service (sc.exe start {NAME}); to run in this console: postflow run config.json"
            );
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!(
                "postflow: {}",
                scm_error("service run", "StartServiceCtrlDispatcher", e)
            );
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

windows_service::define_windows_service!(ffi_service_main, service_main);

fn status(state: ServiceState, exit_code: ServiceExitCode, wait_hint: Duration) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code,
        checkpoint: 0,
        wait_hint,
        process_id: None,
    }
}

/// The service: report running, run the pipeline until a stop, report stopped with its exit
/// code (a non-zero one makes the SCM restart us).
fn service_main(_arguments: Vec<OsString>) {
    AS_SERVICE.store(true, Ordering::Relaxed);
    let handle: Arc<OnceLock<ServiceStatusHandle>> = Arc::new(OnceLock::new());
    let for_handler = Arc::clone(&handle);
    let on_control = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            if let Some(h) = for_handler.get() {
                let pending = status(
                    ServiceState::StopPending,
                    ServiceExitCode::NO_ERROR,
                    STOP_WAIT_HINT,
                );
                let _ = h.set_service_status(pending);
            }
            shutdown::request(StopRequested::Service);
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    // Without a handle there is no one to report to; the SCM sees the process end.
    let Ok(registered) = service_control_handler::register(NAME, on_control) else {
        return;
    };
    let _ = handle.set(registered);
    let _ = registered.set_service_status(status(
        ServiceState::Running,
        ServiceExitCode::NO_ERROR,
        Duration::ZERO,
    ));
    let code = match CONFIG.get() {
        Some(path) => match load_config(path) {
            Ok(config) => crate::cmd::run(config),
            Err(code) => code,
        },
        None => ExitCode::from(EXIT_USAGE),
    };
    let _ = registered.set_service_status(status(
        ServiceState::Stopped,
        service_exit_code(code),
        Duration::ZERO,
    ));
}

/// The exit code as the SCM wants it: success, or postflow's own code as service-specific.
fn service_exit_code(code: ExitCode) -> ServiceExitCode {
    if code == ExitCode::SUCCESS {
        ServiceExitCode::NO_ERROR
    } else if code == ExitCode::from(EXIT_USAGE) {
        ServiceExitCode::ServiceSpecific(EXIT_USAGE.into())
    } else {
        ServiceExitCode::ServiceSpecific(EXIT_FAILURE.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scm_starts_this_binary_as_a_service_on_the_absolute_config_at_boot() {
        let info = service_info(
            Path::new(r"C:\Program Files\postflow\postflow.exe"),
            Path::new(r"C:\ProgramData\postflow\config.json"),
        );
        assert_eq!(info.name, "postflow");
        assert_eq!(info.start_type, ServiceStartType::AutoStart);
        let args: Vec<&str> = info
            .launch_arguments
            .iter()
            .map(|a| a.to_str().unwrap())
            .collect();
        assert_eq!(
            args,
            ["service", "run", r"C:\ProgramData\postflow\config.json"]
        );
        assert_eq!(info.account_name, None, "LocalSystem by default");
    }

    #[test]
    fn a_failed_service_is_restarted_three_times_ten_seconds_apart_and_forgiven_after_a_day() {
        let r = recovery();
        let actions = r.actions.unwrap();
        assert_eq!(actions.len(), 3);
        assert!(actions
            .iter()
            .all(|a| a.action_type == ServiceActionType::Restart
                && a.delay == Duration::from_secs(10)));
        assert_eq!(
            r.reset_period.to_raw(),
            ServiceFailureResetPeriod::After(Duration::from_secs(86400)).to_raw()
        );
    }

    #[test]
    fn only_a_clean_stop_reports_success_to_the_scm() {
        assert_eq!(
            service_exit_code(ExitCode::SUCCESS),
            ServiceExitCode::NO_ERROR
        );
        assert_eq!(
            service_exit_code(ExitCode::from(EXIT_FAILURE)),
            ServiceExitCode::ServiceSpecific(1)
        );
        assert_eq!(
            service_exit_code(ExitCode::from(EXIT_USAGE)),
            ServiceExitCode::ServiceSpecific(2)
        );
    }

    #[test]
    fn a_denied_scm_says_to_elevate() {
        let e = windows_service::Error::Winapi(std::io::Error::from_raw_os_error(5));
        let text = scm_error("service install", "OpenSCManager", e);
        assert!(
            text.starts_with(
                "service install needs an elevated (Administrator) prompt: OpenSCManager: "
            ),
            "{text}"
        );
    }
}
