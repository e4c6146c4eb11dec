//! `kasip-kiosk`: parse flags, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use kasip_kiosk::cli::{init_logging, run, Cli};
use kasip_kiosk::error::EXIT_USAGE;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // --help and --version are not errors.
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", kasip_certs::process::report(&error));
            ExitCode::from(error.exit_code())
        }
    }
}
