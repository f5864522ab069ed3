//! What the figures came from: CPU, memory, kernel and the versions of the parts measured.

use std::process::Command;

/// `(what, value)` pairs for the report.
pub fn describe() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = field(&meminfo, "MemTotal")
        .and_then(|kb| kb.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or("unknown".into(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1048576.0)
        });
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".into(), |k| k.trim().to_string());

    vec![
        ("CPU".into(), format!("{cpu}, {cores} cores available")),
        ("memory".into(), memory),
        ("OS".into(), format!("{os}, Linux {kernel}")),
        ("swtpm".into(), first_line("swtpm", &["--version"])),
        ("tpm2-tss".into(), package("libtss2-esys-3.0.2-0")),
        ("tpm2-pkcs11".into(), package("libtpm2-pkcs11-1")),
        ("OpenSSH".into(), first_line("ssh", &["-V"])),
        ("rustc".into(), first_line("rustc", &["--version"])),
        (
            "ssh-tpm commit".into(),
            first_line("git", &["describe", "--always", "--dirty"]),
        ),
    ]
}

fn field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_string())
    })
}

/// The first line a program prints, on stdout or stderr (`ssh -V` uses stderr).
fn first_line(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Err(_) => "not found".into(),
    }
}

fn package(name: &str) -> String {
    let version = first_line("dpkg-query", &["-W", "-f=${Version}", name]);
    if version.is_empty() {
        "not installed".into()
    } else {
        format!("{name} {version}")
    }
}
