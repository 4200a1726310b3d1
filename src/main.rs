//! The `roundabout` command: read the flags, then write a CSR or run the proxy.

use roundabout::config::flags::{self, Parsed};
use roundabout::config::Command;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flags = match flags::parse(&args) {
        Parsed::Flags(f) => f,
        Parsed::Help(text) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Parsed::Error(e) => {
            eprintln!("roundabout: {e}\nRun 'roundabout -h' to list the flags.");
            return ExitCode::from(2);
        }
    };
    match Command::from_flags(*flags) {
        Err(e) => {
            eprintln!("roundabout: {e}");
            ExitCode::from(2)
        }
        Ok(Command::Version) => {
            println!("roundabout {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Csr(req, out)) => roundabout::run::csr(&req, out.as_deref()),
        Ok(Command::Proxy(config)) => roundabout::run::proxy(*config),
    }
}
