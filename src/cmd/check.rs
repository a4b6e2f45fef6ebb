//! `postflow check`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::{missing_credential, CHECK_RETRY, EXIT_FAILURE, EXIT_OK};
use crate::config::{Config, ProjectConfig, TunnelMode};
use crate::frameio::api::{Account, Api};
use crate::frameio::auth::Auth;
use crate::human;
use crate::process::find_program;
use crate::tunnel;

mod space;

/// Below this much free space in the state dir, `check` warns: the ledger, tokens and logs
/// would soon stop being written (uploads pause then; nothing is lost, but nothing moves).
const LOW_SPACE: u64 = 100 * 1024 * 1024;

/// One line of the `check` checklist, with indented lines under it (ids to choose from).
struct Check {
    ok: bool,
    /// Passes, but a person should know (shown as `[warn]`).
    warn: bool,
    what: String,
    more: Vec<String>,
}

impl Check {
    fn pass(what: impl Into<String>) -> Check {
        Check {
            ok: true,
            warn: false,
            what: what.into(),
            more: Vec::new(),
        }
    }

    fn warn(what: impl Into<String>) -> Check {
        Check {
            ok: true,
            warn: true,
            what: what.into(),
            more: Vec::new(),
        }
    }

    fn fail(what: impl Into<String>) -> Check {
        Check {
            ok: false,
            warn: false,
            what: what.into(),
            more: Vec::new(),
        }
    }

    fn with(mut self, more: Vec<String>) -> Check {
        self.more = more;
        self
    }
}

/// `postflow check`: what can be verified from here, one line each; exit 0 only if all pass.
pub fn check(config: Config) -> ExitCode {
    let mut lines = vec![Check::pass(format!(
        "config {} is valid",
        config.path.display()
    ))];
    for w in &config.warnings {
        lines.push(Check::fail(w.clone()));
    }
    lines.push(match config.require_for_run() {
        Ok(()) => Check::pass("Frame.io client and project ids are set"),
        Err(e) => Check::fail(format!("{}: {}", e.key, e.message)),
    });
    for p in &config.projects {
        let key = p.root_key();
        lines.push(match std::fs::read_dir(&p.root) {
            Ok(entries) => Check::pass(format!(
                "{key} {} is readable ({} entries)",
                p.root.display(),
                entries.count()
            )),
            Err(e) => Check::fail(format!("{key} {}: {e}", p.root.display())),
        });
    }
    lines.push(check_state_dir(&config.state_dir));
    lines.push(check_free_space(&config.state_dir));
    lines.extend(check_frameio(&config));
    if matches!(config.tunnel.mode, TunnelMode::Quick | TunnelMode::Named) {
        lines.push(match find_program(&config.tunnel.cloudflared) {
            Some(p) => match tunnel::version(&p) {
                Ok(v) => Check::pass(format!("cloudflared {v} found at {}", p.display())),
                Err(e) => Check::fail(format!("cloudflared at {} does not run: {e}", p.display())),
            },
            None => Check::fail(format!(
                "cloudflared not found (tunnel.cloudflared = {:?}); install it from \
                 Cloudflare's packages, or set tunnel.mode to \"off\" to upload without a tunnel",
                config.tunnel.cloudflared.display().to_string()
            )),
        });
    }
    let mut all_ok = true;
    for line in &lines {
        all_ok &= line.ok;
        println!(
            "{} {}",
            match (line.ok, line.warn) {
                (true, false) => "[ok]  ",
                (true, true) => "[warn]",
                (false, _) => "[FAIL]",
            },
            line.what
        );
        for more in &line.more {
            println!("         {more}");
        }
    }
    ExitCode::from(if all_ok { EXIT_OK } else { EXIT_FAILURE })
}

fn check_state_dir(path: &Path) -> Check {
    let probe = path.join(".check-probe");
    let result = std::fs::create_dir_all(path)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe));
    match result {
        Ok(()) => Check::pass(format!("state_dir {} is writable", path.display())),
        Err(e) => Check::fail(format!("state_dir {}: {e}", path.display())),
    }
}

fn check_free_space(path: &Path) -> Check {
    match space::available(path) {
        Ok(free) if free < LOW_SPACE => Check::warn(format!(
            "state_dir {} has only {} free (under {}): when it fills, uploads pause until \
             space is freed",
            path.display(),
            human::size(free),
            human::size(LOW_SPACE)
        )),
        Ok(free) => Check::pass(format!(
            "state_dir {} has {} free",
            path.display(),
            human::size(free)
        )),
        Err(e) => Check::fail(format!(
            "state_dir {}: cannot tell the free space: {e}",
            path.display()
        )),
    }
}

/// Tokens, `/v4/me`, the account, the project and its root folder. When an id is missing
/// or wrong, lists what the user can see so the right one can be copied into config.json.
fn check_frameio(config: &Config) -> Vec<Check> {
    let f = &config.frameio;
    let mut lines = Vec::new();
    if let Some(key) = missing_credential(config) {
        lines.push(Check::fail(format!(
            "Frame.io not checked: {key} is not set (docs/guide.md, \"Set-up\")"
        )));
        return lines;
    }
    let auth = Auth::new(f, &config.state_dir, None);
    let tokens = auth.tokens_path().to_path_buf();
    if !tokens.exists() {
        lines.push(Check::fail(format!(
            "no Frame.io tokens in {}: run `postflow auth {}` to sign in",
            tokens.display(),
            config.path.display()
        )));
        return lines;
    }
    let before = auth.expires_in();
    if let Err(e) = auth.access_token() {
        lines.push(Check::fail(format!("Frame.io tokens: {e}")));
        return lines;
    }
    let after = auth.expires_in().unwrap_or_default();
    let refreshed = before.is_none_or(|b| after > b + Duration::from_secs(1));
    lines.push(Check::pass(format!(
        "Frame.io tokens in {} {} (access token valid for {})",
        tokens.display(),
        if refreshed {
            "were refreshed"
        } else {
            "are fresh"
        },
        human::duration(after)
    )));
    let api = Api::new(f, auth).with_retry(CHECK_RETRY);
    match api.me() {
        Ok(me) => lines.push(Check::pass(format!(
            "Frame.io /v4/me works: signed in as {}",
            me.display()
        ))),
        Err(e) => {
            lines.push(Check::fail(e.to_string()));
            return lines;
        }
    }
    let accounts = match api.accounts() {
        Ok(a) => a,
        Err(e) => {
            lines.push(Check::fail(e.to_string()));
            return lines;
        }
    };
    for p in &config.projects {
        lines.extend(check_project(config, p, &api, &accounts));
    }
    if !config.review.webhooks {
        lines.push(Check::pass("review: off (review.webhooks)"));
    } else if config.tunnel.mode == crate::config::TunnelMode::Off {
        lines.push(Check::warn(format!(
            "review: {}",
            crate::review::NEEDS_TUNNEL
        )));
    } else {
        // A webhook Frame.io no longer knows is made again by `run`: a warning, not a failure.
        for (ok, line) in crate::review::check_lines(&api, &config.state_dir) {
            lines.push(if ok {
                Check::pass(line)
            } else {
                Check::warn(line)
            });
        }
    }
    lines
}

/// One project's account, Frame.io project, root folder and destination folder; when an id
/// is wrong, the ids that can be seen.
fn check_project(
    config: &Config,
    p: &ProjectConfig,
    api: &Api,
    accounts: &[Account],
) -> Vec<Check> {
    let mut lines = Vec::new();
    // Keys as the file spells them; with several projects each line names its project.
    let (account_key, project_key, folder_key, named) = if config.several_projects {
        (
            format!("{}.account_id", p.key),
            format!("{}.project_id", p.key),
            format!("{}.folder", p.key),
            format!("project {}: ", p.name),
        )
    } else {
        (
            "frameio.account_id".to_string(),
            "frameio.project_id".to_string(),
            "frameio.folder".to_string(),
            String::new(),
        )
    };
    let account = accounts.iter().find(|a| a.id == p.account_id);
    let Some(account) = account else {
        let what = if p.account_id.is_empty() {
            format!("{named}{account_key} is not set; the accounts, workspaces and projects you can see:")
        } else {
            format!(
                "{named}{account_key} {:?} is not one of your accounts; those you can see:",
                p.account_id
            )
        };
        lines.push(Check::fail(what).with(visible_projects(
            api,
            accounts,
            config.several_projects,
        )));
        return lines;
    };
    lines.push(Check::pass(format!(
        "{named}Frame.io account {} ({}) found",
        account.id,
        account.display_name.as_deref().unwrap_or("no name")
    )));
    let project = if p.project_id.is_empty() {
        Err(format!("{project_key} is not set"))
    } else {
        api.project(&account.id, &p.project_id)
            .map_err(|e| format!("{project_key} {:?}: {e}", p.project_id))
    };
    let project = match project {
        Ok(p) => p,
        Err(what) => {
            let what = format!("{named}{what}; the projects you can see in this account:");
            let list =
                visible_projects(api, std::slice::from_ref(account), config.several_projects);
            lines.push(Check::fail(what).with(list));
            return lines;
        }
    };
    lines.push(Check::pass(format!(
        "{named}Frame.io project {} ({}) found",
        project.id, project.name
    )));
    lines.push(match api.folder(&account.id, &project.root_folder_id) {
        Ok(_) => Check::pass(format!(
            "{named}the project's root folder {} is reachable",
            project.root_folder_id
        )),
        Err(e) => Check::fail(format!("{named}the project's root folder: {e}")),
    });
    if !p.folder.is_empty() {
        let folders = crate::upload::folders::FolderCache::new(&account.id, &project.id);
        lines.push(match folders.existing(api, &p.folder) {
            Ok(Some(id)) => Check::pass(format!("{named}{folder_key} {:?} found ({id})", p.folder)),
            Ok(None) => Check::warn(format!(
                "{named}{folder_key} {:?} is not in the project yet: it is created with the \
                 first upload",
                p.folder
            )),
            Err(e) => Check::fail(format!("{named}{folder_key} {:?}: {e}", p.folder)),
        });
    }
    lines
}

/// `account ID "name"` / `workspace …` / `project …` lines, indented as a tree.
/// `several`: the config has a `projects` list (the ids go in its entries).
fn visible_projects(api: &Api, accounts: &[Account], several: bool) -> Vec<String> {
    let (account_key, project_key) = if several {
        ("projects[].account_id", "projects[].project_id")
    } else {
        ("frameio.account_id", "frameio.project_id")
    };
    let mut out = Vec::new();
    if accounts.is_empty() {
        out.push("(no accounts: is this Adobe ID a member of a Frame.io V4 account?)".into());
    }
    for a in accounts {
        out.push(format!(
            "account {} {:?}   -> {account_key}",
            a.id,
            a.display_name.as_deref().unwrap_or("")
        ));
        let workspaces = match api.workspaces(&a.id) {
            Ok(w) => w,
            Err(e) => {
                out.push(format!("  (cannot list workspaces: {e})"));
                continue;
            }
        };
        for w in workspaces {
            out.push(format!("  workspace {} {:?}", w.id, w.name));
            match api.projects(&a.id, &w.id) {
                Ok(projects) => out.extend(
                    projects
                        .into_iter()
                        .map(|p| format!("    project {} {:?}   -> {project_key}", p.id, p.name)),
                ),
                Err(e) => out.push(format!("    (cannot list projects: {e})")),
            }
        }
    }
    out
}
