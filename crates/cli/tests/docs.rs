//! Man pages and completions come from the same clap definitions as `--help`: every long
//! option a binary's help lists appears in its man page and its bash completion.

mod support;

use support::*;

#[test]
fn man_pages_and_completions_cover_every_option() {
    let dir = tempdir();
    let man = dir.path().join("man");
    let completions = dir.path().join("completions");
    let docs = env!("CARGO_BIN_EXE_ssh-tpm-docs");
    assert_ok(&run(tool(docs).arg("man").arg(&man)), "ssh-tpm-docs man");
    let out = run(tool(docs).args(["completions", "bash"]).arg(&completions));
    assert_ok(&out, "ssh-tpm-docs completions bash");

    for name in [
        "ssh-tpm-keygen",
        "ssh-tpm-agent",
        "ssh-tpm-add",
        "ssh-tpm-hostkeys",
    ] {
        let help = stdout(&run(product(name).arg("--help")));
        let page = read_text(&man.join(format!("{name}.1"))).replace("\\-", "-");
        let script = read_text(&completions.join(format!("{name}.bash")));
        let options: Vec<&str> = help
            .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
            .filter(|word| word.starts_with("--") && word.len() > 2)
            .collect();
        assert!(
            options.contains(&"--help"),
            "{name} --help lists no options:\n{help}"
        );
        for option in options {
            let option = option.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
            assert!(page.contains(option), "{name}.1 lacks {option}");
            assert!(script.contains(option), "{name}.bash lacks {option}");
        }
    }
}
