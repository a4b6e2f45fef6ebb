//! `postflow auth`.

use std::process::ExitCode;

use super::{init_logging, missing_credential, CHECK_RETRY, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::config::Config;
use crate::frameio::api::Api;
use crate::frameio::auth::{code_from_paste, Auth};

/// `postflow auth`: prints the Adobe sign-in link, reads the address the browser ended on (or
/// the bare code), checks `state`, exchanges the code, saves `tokens.json` and says who is
/// connected. Takes no lock: it may run while `run` does, which picks the new tokens up.
pub fn auth(config: Config) -> ExitCode {
    if let Some(key) = missing_credential(&config) {
        eprintln!(
            "{}: {key}: required for `postflow auth`: your Adobe OAuth Web App credential \
             (docs/guide.md, \"Set-up\")",
            config.path.display()
        );
        return ExitCode::from(EXIT_USAGE);
    }
    init_logging(&config);
    let fail = |message: String| {
        eprintln!("postflow auth: {message}");
        ExitCode::from(EXIT_FAILURE)
    };
    let auth = Auth::new(&config.frameio, &config.state_dir, None);
    let state = match crate::frameio::random_hex(16) {
        Ok(state) => state,
        Err(e) => return fail(format!("cannot make the sign-in's state value: {e}")),
    };
    println!("Sign in to Frame.io with your Adobe ID. Open this address in a browser:\n");
    println!("{}\n", auth.authorize_url(&state));
    println!(
        "After you sign in, Adobe sends the browser to {}. That page may not load; that is \
         fine. Copy the whole address from the browser's address bar, paste it here and press \
         Enter:",
        config.frameio.redirect_uri
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        return fail(format!("cannot read what was pasted: {e}"));
    }
    let code = match code_from_paste(&line, &state) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    if let Err(e) = auth.login_with_code(&code) {
        return fail(e.to_string());
    }
    let api = Api::new(&config.frameio, auth.clone()).with_retry(CHECK_RETRY);
    match api.me() {
        Ok(me) => {
            println!(
                "Connected to Frame.io as {}. Tokens saved in {}.",
                me.display(),
                auth.tokens_path().display()
            );
            ExitCode::from(EXIT_OK)
        }
        Err(e) => fail(format!(
            "the tokens are saved in {}, but Frame.io refused them: {e}",
            auth.tokens_path().display()
        )),
    }
}
