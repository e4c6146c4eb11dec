//! `kasip-agent`: parse flags, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use kasip_agent::cli::{init_logging, run, Cli};
use kasip_agent::error::{AgentError, EXIT_USAGE};

fn main() -> ExitCode {
    kasip_agent::allocator::configure();
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
            eprintln!("error: {}", kasip_agent::error::report(&error));
            if let AgentError::Import { file, source } = &error {
                if let kasip_agent::import::ImportError::Rejected(rows) = source.as_ref() {
                    for row in rows {
                        eprintln!("{file}: {row}");
                    }
                }
            }
            ExitCode::from(error.exit_code())
        }
    }
}
