//! The test suite's run in `cargo xtask test`: cargo-nextest for the tests
//! (settings in `.config/nextest.toml`), cargo for the doc tests, and the
//! figures of both added up into the one closing line.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::workspace_root;

/// What a runner reported.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    /// Ignored tests: those the filters chose that `#[ignore]` keeps from
    /// running.
    pub skipped: u64,
    /// The runner exited successfully.
    pub ok: bool,
}

fn cargo() -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(workspace_root());
    c
}

/// The whole workspace, unless the filters name packages themselves.
fn scope(args: &[String]) -> Vec<String> {
    let names_package = args
        .iter()
        .any(|a| a.starts_with("-p") || a.starts_with("--package"));
    if names_package {
        Vec::new()
    } else {
        vec!["--workspace".to_string()]
    }
}

/// `cargo nextest run` with its report echoed; passed and failed from its
/// summary line, skipped from a listing of the same tests.
pub fn nextest_run(args: &[String]) -> Result<Counts> {
    // nextest reports on stderr; the tests' own output when not captured
    // goes where ours goes.
    let mut child = cargo()
        .args(["nextest", "run"])
        .args(scope(args))
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .context("failed to start cargo nextest run")?;
    let err = child.stderr.take().expect("piped");
    let mut summary = None;
    for line in BufReader::new(err).lines() {
        let line = line?;
        eprintln!("{line}");
        if let Some(s) = parse_summary(&line) {
            summary = Some(s);
        }
    }
    let status = child.wait()?;
    let (run, passed) = summary.unwrap_or((0, 0));
    let mut counts = Counts {
        passed,
        // Failed, timed out, or ended by a signal: run but not passed.
        failed: run.saturating_sub(passed),
        skipped: 0,
        ok: status.success(),
    };
    // nextest's "skipped" also counts the tests the filters left out; the
    // listing tells which of the chosen ones are ignored. Only after a
    // build: the listing would build again to fail again.
    if summary.is_some() {
        counts.skipped = ignored_count(args)?;
    }
    Ok(counts)
}

/// `N tests run: P passed, ...` (after a cancelled run `N/M tests run`),
/// from nextest's closing `Summary` line: (N, P).
pub fn parse_summary(line: &str) -> Option<(u64, u64)> {
    let line = strip_ansi(line);
    let rest = line.trim_start().strip_prefix("Summary [")?;
    let (_, rest) = rest.split_once(']')?;
    let (run, results) = rest
        .split_once(" tests run:")
        .or_else(|| rest.split_once(" test run:"))?;
    let run: u64 = run.trim().split('/').next()?.parse().ok()?;
    let mut passed = 0;
    for part in results.split(',') {
        let mut words = part.split_whitespace();
        if let (Some(n), Some("passed")) = (words.next(), words.next()) {
            passed = n.parse().ok()?;
        }
    }
    Some((run, passed))
}

/// The tests the filters choose that are `#[ignore]`d: `cargo nextest
/// list` with ignored tests run too, so that the filters alone decide.
fn ignored_count(args: &[String]) -> Result<u64> {
    let out = cargo()
        .args(["nextest", "list", "--run-ignored", "all"])
        .args(["--message-format", "json"])
        .args(scope(args))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("failed to start cargo nextest list")?;
    anyhow::ensure!(
        out.status.success(),
        "cargo nextest list failed: {}",
        out.status
    );
    count_ignored(&String::from_utf8_lossy(&out.stdout))
}

/// From `cargo nextest list --message-format json`: the test cases marked
/// ignored that the filters match.
pub fn count_ignored(json: &str) -> Result<u64> {
    let v: serde_json::Value =
        serde_json::from_str(json).context("cargo nextest list printed no JSON")?;
    let suites = v["rust-suites"]
        .as_object()
        .context("no rust-suites in nextest's list")?;
    let mut n = 0;
    for suite in suites.values() {
        let Some(cases) = suite["testcases"].as_object() else {
            continue;
        };
        for case in cases.values() {
            if case["ignored"] == true && case["filter-match"]["status"] == "matches" {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// `cargo test --doc`, which nextest cannot run, echoed; its per-binary
/// `test result:` lines added up. A narrowed run skips it: its filters are
/// nextest's, not cargo's.
pub fn cargo_test_doc(args: &[String]) -> Result<Counts> {
    if !args.is_empty() {
        return Ok(Counts {
            ok: true,
            ..Counts::default()
        });
    }
    let mut child = cargo()
        .args(["test", "--doc", "--workspace"])
        .stdout(Stdio::piped())
        .spawn()
        .context("failed to start cargo test --doc")?;
    let out = child.stdout.take().expect("piped");
    let mut counts = Counts::default();
    let mut stdout = std::io::stdout().lock();
    for line in BufReader::new(out).lines() {
        let line = line?;
        writeln!(stdout, "{line}")?;
        add_libtest_result(&mut counts, &line);
    }
    counts.ok = child.wait()?.success();
    Ok(counts)
}

/// Adds libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; ...`.
pub fn add_libtest_result(c: &mut Counts, line: &str) {
    let line = strip_ansi(line);
    let Some(rest) = line.strip_prefix("test result: ") else {
        return;
    };
    for part in rest.split([';', '.']) {
        let mut it = part.split_whitespace();
        if let (Some(n), Some(what)) = (it.next(), it.next()) {
            let n: u64 = n.parse().unwrap_or(0);
            match what {
                "passed" => c.passed += n,
                "failed" => c.failed += n,
                "ignored" => c.skipped += n,
                _ => {}
            }
        }
    }
}

/// The text without terminal colour sequences (`ESC [ ... letter`), which
/// CARGO_TERM_COLOR=always would put in.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nextest_summaries_give_run_and_passed() {
        assert_eq!(
            parse_summary("     Summary [   0.117s] 38 tests run: 38 passed, 0 skipped"),
            Some((38, 38))
        );
        assert_eq!(
            parse_summary(
                "     Summary [ 812.004s] 712 tests run: 708 passed (3 slow), 2 failed, 2 timed out, 5 skipped"
            ),
            Some((712, 708))
        );
        assert_eq!(
            parse_summary("     Summary [   2.000s] 1 test run: 0 passed, 1 failed, 0 skipped"),
            Some((1, 0))
        );
        // Cancelled: only those that ran count.
        assert_eq!(
            parse_summary("     Summary [  10.5s] 5/38 tests run: 4 passed, 1 failed, 33 skipped"),
            Some((5, 4))
        );
        assert_eq!(
            parse_summary("\u{1b}[32;1m     Summary\u{1b}[0m [   0.1s] \u{1b}[1m2\u{1b}[0m tests run: \u{1b}[1m2\u{1b}[0m \u{1b}[32;1mpassed\u{1b}[0m, \u{1b}[1m0\u{1b}[0m skipped"),
            Some((2, 2))
        );
        assert_eq!(parse_summary("        PASS [   0.009s] (1/38) x::y"), None);
        assert_eq!(parse_summary("test result: ok. 3 passed"), None);
    }

    #[test]
    fn ignored_tests_count_only_where_the_filters_match() {
        let json = r#"{"rust-suites": {
            "a": {"testcases": {
                "t1": {"ignored": false, "filter-match": {"status": "matches"}},
                "t2": {"ignored": true, "filter-match": {"status": "matches"}},
                "t3": {"ignored": true, "filter-match": {"status": "mismatch", "reason": "string"}}
            }},
            "b": {"testcases": {
                "t4": {"ignored": true, "filter-match": {"status": "matches"}}
            }},
            "c": {"status": "skipped"}
        }}"#;
        assert_eq!(count_ignored(json).unwrap(), 2);
        assert!(count_ignored("not json").is_err());
    }

    #[test]
    fn libtest_results_add_up_with_ignored_as_skipped() {
        let mut c = Counts::default();
        add_libtest_result(
            &mut c,
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 2 filtered out; finished in 0.00s",
        );
        add_libtest_result(
            &mut c,
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        add_libtest_result(&mut c, "running 3 tests");
        assert_eq!((c.passed, c.failed, c.skipped), (4, 2, 1));
    }

    #[test]
    fn the_workspace_unless_a_package_is_named() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(scope(&s(&["e2e_http"])), s(&["--workspace"]));
        assert_eq!(scope(&s(&["-E", "package(xtask)"])), s(&["--workspace"]));
        assert!(scope(&s(&["-p", "xtask"])).is_empty());
        assert!(scope(&s(&["--package=xtask"])).is_empty());
        assert!(scope(&s(&["-pxtask"])).is_empty());
    }
}
