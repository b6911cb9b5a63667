use std::process::ExitCode;

use sysupdate_publish::cli;
use sysupdate_publish::commands::{self, Outcome};

fn main() -> ExitCode {
    let cli = cli::parse();
    match commands::run(cli) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Problems) => ExitCode::from(1),
        Err(err) => {
            eprintln!("error: {}", commands::render_error(&err));
            ExitCode::from(commands::exit_code(&err))
        }
    }
}
