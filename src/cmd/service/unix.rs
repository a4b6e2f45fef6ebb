//! `postflow service install|uninstall` on Linux and macOS: print the systemd unit or the
//! launchd agent (the templates in contrib/, with this binary's and the config's absolute paths
//! filled in) and the commands that install or remove it. Printing, not installing: where it
//! goes and as which user is the administrator's call, and systemd or launchd supervise.

use std::path::Path;

/// The launchd job's label (and its plist's name in ~/Library/LaunchAgents).
pub const LAUNCHD_LABEL: &str = "local.postflow";

/// The unit or agent for this system, commented with how to install it.
pub fn install(exe: &Path, config: &Path) -> String {
    if cfg!(target_os = "macos") {
        launchd_agent(exe, config)
    } else {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty() && u != "root");
        systemd_unit(exe, config, user.as_deref())
    }
}

/// The commands that stop and remove what `install` printed.
pub fn uninstall() -> String {
    if cfg!(target_os = "macos") {
        format!(
            "Stop and remove postflow's launchd agent:\n  \
             launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}\n  \
             rm ~/Library/LaunchAgents/{LAUNCHD_LABEL}.plist\n"
        )
    } else {
        "Stop and remove postflow's systemd unit:\n  \
         sudo systemctl disable --now postflow\n  \
         sudo rm /etc/systemd/system/postflow.service\n  \
         sudo systemctl daemon-reload\n"
            .to_string()
    }
}

/// contrib/postflow.service for this binary and config, running as `user` (the one who typed
/// the command; none for root). Its comments are the commands that install it: the whole text
/// can be piped into place.
pub fn systemd_unit(exe: &Path, config: &Path, user: Option<&str>) -> String {
    let Words {
        exe: exe_s,
        config: config_s,
        dir,
        install,
    } = Words::new(exe, config);
    let (user_note, user_line) = match user {
        Some(u) => (
            format!("# It runs as {u}, who must be able to read the watch folder and write the state dir."),
            format!("User={u}\n"),
        ),
        None => (
            "# It runs as root; a User= line runs it as an account that can read the watch folder."
                .to_string(),
            String::new(),
        ),
    };
    format!(
        "\
# postflow's systemd unit, printed by `postflow service install` (from contrib/postflow.service).
# Install and start it:
#   {install} | sudo tee /etc/systemd/system/postflow.service
#   sudo systemctl daemon-reload
#   sudo systemctl enable --now postflow
# Logs: journalctl -u postflow -f    Stop: sudo systemctl stop postflow (or postflow stop CONFIG)
{user_note}
[Unit]
Description=postflow: finished exports to Frame.io
Wants=network-online.target
After=network-online.target remote-fs.target

[Service]
Type=simple
{user_line}WorkingDirectory={dir}
ExecStart={exec} run {conf}
# SIGTERM goes to postflow only; postflow then stops its cloudflared gracefully and exits.
# KillMode=control-group would signal cloudflared too and cut its graceful stop short.
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec=40
Restart=always
RestartSec=5
# Logs go to stderr, which the journal keeps; RUST_LOG overrides log_level.
NoNewPrivileges=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
",
        dir = dir.replace('%', "%%"),
        exec = systemd_word(&exe_s),
        conf = systemd_word(&config_s),
    )
}

/// contrib/com.example.postflow.plist for this binary and config: a user agent (so the
/// user's LucidLink or SMB mounts are visible), logging beside the config.
pub fn launchd_agent(exe: &Path, config: &Path) -> String {
    let Words {
        exe: exe_s,
        config: config_s,
        dir,
        install,
    } = Words::new(exe, config);
    let log = Path::new(&dir).join("postflow.log").display().to_string();
    let plist = format!("~/Library/LaunchAgents/{LAUNCHD_LABEL}.plist");
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- postflow's launchd agent, printed by `postflow service install`
     (from contrib/com.example.postflow.plist). Install and start it:
       mkdir -p ~/Library/LaunchAgents
       {install} > {plist}
       launchctl bootstrap gui/$(id -u) {plist}
     Logs: {log_c}
     Stop: launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}
     A watch folder under Desktop, Documents or Downloads, or on a network or removable
     volume, needs Full Disk Access for {exe_c} (docs/install.md, "macOS").
     launchd sends SIGTERM to postflow only; postflow stops its cloudflared itself. -->
<plist version="1.0">
<dict>
  <key>Label</key><string>{LAUNCHD_LABEL}</string>
  <key>ProgramArguments</key>
  <array>
    <string>{exe_x}</string>
    <string>run</string>
    <string>{config_x}</string>
  </array>
  <key>WorkingDirectory</key><string>{dir_x}</string>
  <key>RunAtLoad</key><true/>
  <key>KeepAlive</key><true/>
  <key>ThrottleInterval</key><integer>10</integer>
  <key>ExitTimeOut</key><integer>40</integer>
  <key>StandardErrorPath</key><string>{log_x}</string>
  <key>StandardOutPath</key><string>{log_x}</string>
  <key>EnvironmentVariables</key>
  <dict>
    <!-- cloudflared from Homebrew -->
    <key>PATH</key><string>/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin</string>
  </dict>
</dict>
</plist>
"#,
        install = comment(&install),
        log_c = comment(&log),
        exe_c = comment(&exe_s),
        exe_x = xml(&exe_s),
        config_x = xml(&config_s),
        dir_x = xml(&dir),
        log_x = xml(&log),
    )
}

/// What both templates fill in: the binary, the config, the config's folder (the working
/// directory), and the command that prints the template again.
struct Words {
    exe: String,
    config: String,
    dir: String,
    install: String,
}

impl Words {
    fn new(exe: &Path, config: &Path) -> Words {
        let exe = exe.display().to_string();
        let dir = config
            .parent()
            .unwrap_or(Path::new("/"))
            .display()
            .to_string();
        let config = config.display().to_string();
        let install = format!(
            "{} service install {}",
            shell_word(&exe),
            shell_word(&config)
        );
        Words {
            exe,
            config,
            dir,
            install,
        }
    }
}

/// A word for a POSIX shell: as is when it is plain, else in single quotes.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A word of an `ExecStart=` line: `%` and `$` escaped (specifiers and variables), quoted when
/// it holds blanks or quotes.
fn systemd_word(s: &str) -> String {
    let escaped = s.replace('%', "%%").replace('$', "$$");
    if escaped.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '\\') {
        format!("\"{}\"", escaped.replace('\\', r"\\").replace('"', "\\\""))
    } else {
        escaped
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Text inside an XML comment, which must not hold `--`.
fn comment(s: &str) -> String {
    s.replace("--", "-\u{2010}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_this_binary_on_this_config_as_the_user() {
        let unit = systemd_unit(
            Path::new("/opt/postflow/postflow"),
            Path::new("/etc/postflow/config.json"),
            Some("ingest"),
        );
        assert!(unit.contains("\nExecStart=/opt/postflow/postflow run /etc/postflow/config.json\n"));
        assert!(unit.contains("\nUser=ingest\n"));
        assert!(unit.contains("\nWorkingDirectory=/etc/postflow\n"));
        assert!(unit.contains(
            "#   /opt/postflow/postflow service install /etc/postflow/config.json | sudo tee"
        ));
        assert!(unit.contains("KillMode=mixed"));
        assert!(unit.contains("WantedBy=multi-user.target"));
    }

    #[test]
    fn odd_characters_in_paths_survive_systemd_and_the_shell() {
        let unit = systemd_unit(
            Path::new("/opt/post flow/postflow"),
            Path::new("/srv/100%/it's $HOME.json"),
            None,
        );
        assert!(unit.contains(
            "ExecStart=\"/opt/post flow/postflow\" run \"/srv/100%%/it's $$HOME.json\"\n"
        ));
        assert!(unit
            .contains("'/opt/post flow/postflow' service install '/srv/100%/it'\\''s $HOME.json'"));
        assert!(!unit.contains("\nUser="), "no User= line for root");
    }

    #[test]
    fn the_agent_runs_this_binary_on_this_config_and_logs_beside_it() {
        let plist = launchd_agent(
            Path::new("/usr/local/bin/postflow"),
            Path::new("/Users/ingest/R&D/config.json"),
        );
        assert!(plist.contains(
            "<string>/usr/local/bin/postflow</string>\n    <string>run</string>\n    \
             <string>/Users/ingest/R&amp;D/config.json</string>"
        ));
        assert!(plist.contains("<string>/Users/ingest/R&amp;D/postflow.log</string>"));
        assert!(plist.contains(&format!("<string>{LAUNCHD_LABEL}</string>")));
        assert!(plist.contains("launchctl bootstrap gui/$(id -u)"));
        let comment_body = &plist[plist.find("<!--").unwrap() + 4..plist.find("-->").unwrap()];
        assert!(!comment_body.contains("--"), "a valid XML comment");
    }
}
