//! A catalogue of malformed inputs and the exact error a user sees for each, one table per
//! area: command-line arguments ([`args`]), key files ([`key_files`]), agent messages
//! ([`agent_messages`]), and the CA's HTTP requests and command lines ([`ca_requests`]). An
//! area is a module with a table (or two) and a test that runs each; a new area is a new
//! module beside these. Every mismatch of a table is reported at once, with what was seen, so
//! that a changed message is one edit.

#[path = "../support/mod.rs"]
mod support;

mod agent_messages;
mod args;
mod ca_requests;
mod key_files;

/// Checks `seen` against `expected` for every named case; panics listing all mismatches.
pub fn check_all(area: &str, results: Vec<(String, String, String)>) {
    let mismatches: Vec<String> = results
        .iter()
        .filter(|(_, expected, seen)| expected != seen)
        .map(|(name, expected, seen)| {
            format!("{name}:\n  expected: {expected}\n  seen:     {seen}")
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} {area} cases differ:\n{}",
        mismatches.len(),
        results.len(),
        mismatches.join("\n")
    );
}

/// The catalogue holds at least 60 inputs, across the areas.
#[test]
fn catalogue_has_at_least_60_inputs() {
    let total = args::CASES.len()
        + key_files::cases().len()
        + agent_messages::cases().len()
        + ca_requests::cases().len()
        + ca_requests::COMMANDS.len();
    assert!(total >= 60, "only {total} malformed inputs");
}
