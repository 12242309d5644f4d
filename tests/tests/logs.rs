//! Text logs on a file or a pipe are plain text: no ANSI colour codes for journald, a log
//! shipper or `grep` to trip over (colours only when stderr is a terminal).

#![allow(clippy::unwrap_used)]

use std::process::Command;
use wattest_tests::{Oracle, bin, run_ok};

/// The escape that starts every ANSI colour sequence (`ESC [ … m`).
const ESC: char = '\u{1b}';

#[test]
fn logs_written_to_a_file_or_a_pipe_carry_no_colour_codes() {
    // The oracle's stderr is a file (the harness's oracle.log).
    let oracle = Oracle::start();
    let (state, _node_id) = oracle.enroll_agent("BE");
    // The agent's stderr is a pipe.
    let out = run_ok(
        Command::new(bin("wattest-agent"))
            .args(["run", "--window", "1", "--interval", "0.1", "--state-dir"])
            .arg(state.path())
            .args(["--", "sleep", "1"]),
    );
    let agent = String::from_utf8_lossy(&out.stderr);
    let oracle_log = oracle.log();
    for (who, log) in [("oracle", oracle_log.as_str()), ("agent", &agent)] {
        // Something was logged at the default level, so the absence of colours means something.
        assert!(log.contains("INFO"), "{who} logged nothing at info:\n{log}");
        assert!(!log.contains(ESC), "{who} log has ANSI codes:\n{log:?}");
    }
}
