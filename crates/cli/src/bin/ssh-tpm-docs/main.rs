//! `ssh-tpm-docs`: writes the man pages and shell completions of the ssh-tpm binaries from
//! the very clap definitions the binaries parse their arguments with.
//!
//! ```sh
//! cargo run --bin ssh-tpm-docs -- man target/man
//! cargo run --bin ssh-tpm-docs -- completions bash target/completions
//! ```

// The binaries' own command-line modules, compiled here a second time for their
// definitions only; the fields are read by the binaries, not by this one.
#[allow(dead_code)]
#[path = "../ssh-tpm-add/cli.rs"]
mod add;
#[allow(dead_code)]
#[path = "../ssh-tpm-agent/cli.rs"]
mod agent;
#[allow(dead_code)]
#[path = "../ssh-tpm-hostkeys/cli.rs"]
mod hostkeys;
#[allow(dead_code)]
#[path = "../ssh-tpm-keygen/cli.rs"]
mod keygen;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use clap_complete::Shell;

/// Write man pages or shell completions for ssh-tpm-keygen, ssh-tpm-agent, ssh-tpm-add and
/// ssh-tpm-hostkeys.
#[derive(Debug, Parser)]
#[command(name = "ssh-tpm-docs", version)]
enum Docs {
    /// Write NAME.1 man pages into DIR
    Man { dir: PathBuf },
    /// Write completion scripts for SHELL into DIR
    Completions { shell: Shell, dir: PathBuf },
}

fn commands() -> [clap::Command; 4] {
    [
        keygen::Args::command(),
        agent::Args::command(),
        add::Args::command(),
        hostkeys::Args::command(),
    ]
}

fn main() -> ExitCode {
    let written = match Docs::parse() {
        Docs::Man { dir } => write_all(&dir, |command, dir| {
            let path = dir.join(format!("{}.1", command.get_name()));
            let mut page = Vec::new();
            clap_mangen::Man::new(command.clone()).render(&mut page)?;
            std::fs::write(&path, page)?;
            Ok(path)
        }),
        Docs::Completions { shell, dir } => write_all(&dir, |command, dir| {
            let name = command.get_name().to_string();
            clap_complete::generate_to(shell, &mut command.clone(), name, dir)
        }),
    };
    match written {
        Ok(paths) => {
            for path in paths {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ssh-tpm-docs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(
    dir: &Path,
    write: impl Fn(&clap::Command, &Path) -> std::io::Result<PathBuf>,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    commands()
        .iter()
        .map(|command| write(command, dir))
        .collect()
}

#[cfg(test)]
mod docs_tests {
    use super::*;

    #[test]
    fn every_shell_is_known() {
        assert!(<Shell as clap::ValueEnum>::value_variants().contains(&Shell::Bash));
    }
}
