//! Mutation testing of the core modules with cargo-mutants: which changes to
//! the code no test notices. How mutants are built and tested (which tests,
//! timeouts, the mutants excluded by name and why) is in
//! `.cargo/mutants.toml`, where a hand-run `cargo mutants` finds it too;
//! which code is core, and which of it must have no missed mutant, is here.
//!
//! Too slow for `.ci/run` (every mutant rebuilds the daemon's library): it
//! is run before resolving an issue that changes a core module, whole or
//! with `--in-diff`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{output, toolchain, workspace_root};

/// A core module's source file, and when only part of the file is core,
/// text that its mutants' names must contain (the function they are in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Core {
    pub module: &'static str,
    pub file: &'static str,
    pub only: Option<&'static str>,
    /// On the must-be-complete list: one missed mutant fails the run.
    pub complete: bool,
}

const fn core(module: &'static str, file: &'static str, complete: bool) -> Core {
    Core {
        module,
        file,
        only: None,
        complete,
    }
}

pub const CORE: &[Core] = &[
    // Security-group matching: the rule check the XDP program and the
    // compiler's tests share (the rest of lb-common is map layouts), and
    // the compiler of the rules into the LPM tries.
    Core {
        module: "security groups",
        file: "lb-common/src/lib.rs",
        only: Some("SgRules::"),
        complete: true,
    },
    core(
        "security groups",
        "lb-userspace/src/kernel/compile.rs",
        true,
    ),
    core("router", "lb-userspace/src/proxy/route/router.rs", true),
    core("router", "lb-userspace/src/proxy/route/wildcard.rs", true),
    core("health", "lb-userspace/src/targets/health.rs", true),
    core("framing guard", "lb-userspace/src/proxy/h1/guard.rs", true),
    core(
        "framing guard",
        "lb-userspace/src/proxy/h1/framing.rs",
        true,
    ),
    core("selection", "lb-userspace/src/targets/group.rs", false),
    core("selection", "lb-userspace/src/targets/algorithm.rs", false),
    core("selection", "lb-userspace/src/targets/sticky.rs", false),
    core(
        "validator",
        "lb-userspace/src/config/validate/mod.rs",
        false,
    ),
    core(
        "validator",
        "lb-userspace/src/config/validate/limits.rs",
        false,
    ),
    core(
        "validator",
        "lb-userspace/src/config/validate/listeners.rs",
        false,
    ),
    core(
        "validator",
        "lb-userspace/src/config/validate/load_balancers.rs",
        false,
    ),
    core(
        "validator",
        "lb-userspace/src/config/validate/rules.rs",
        false,
    ),
    core(
        "validator",
        "lb-userspace/src/config/validate/security_groups.rs",
        false,
    ),
    core(
        "validator",
        "lb-userspace/src/config/validate/target_groups.rs",
        false,
    ),
    core(
        "validator",
        "lb-userspace/src/config/validate/values.rs",
        false,
    ),
];

/// The share of caught mutants over all the core modules that is the goal
/// (the must-be-complete files aim at all of them).
const GOAL_PERCENT: f64 = 90.0;

/// Where the run's output goes, under the workspace root: cargo-mutants'
/// own `mutants.out/`, the diff of `--in-diff`, and `missed.txt`.
const OUT_DIR: &str = "target/mutants";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only the core files whose path contains this (repeatable), e.g.
    /// `health.rs` or `config/validate/`.
    #[arg(long = "file", value_name = "F")]
    files: Vec<String>,
    /// Only mutants on lines changed since this git revision (committed or
    /// not), for a quick run over one change.
    #[arg(long, value_name = "REF")]
    in_diff: Option<String>,
    /// Only the unit tests whose path contains this, e.g. `config::` for
    /// the validator: a quicker run whose caught share is a lower bound
    /// (a mutant it misses may be caught by a test it left out).
    #[arg(long = "tests", value_name = "FILTER")]
    tests: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let cores = select(CORE, &args.files)?;
    toolchain::ensure_cargo_mutants()?;
    let root = workspace_root();
    let out = root.join(OUT_DIR);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(&root)
        .args(["mutants", "--workspace", "--output"])
        .arg(&out)
        // The library unit tests only (see .cargo/mutants.toml), and for
        // the build too: cargo-mutants builds before it tests, and would
        // otherwise also build the daemon's binary and integration tests
        // for every mutant. (Not in the config file, where a hand-run's
        // usual `-- --lib` would give cargo `--lib` twice, which it
        // refuses.)
        .arg("--cargo-arg=--lib")
        .args(mutants_filters(&cores))
        // Debug info is most of a test binary's size and of its link time,
        // and every mutant relinks: without it a mutant takes a fraction
        // of the time. Nothing here reads a backtrace.
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .env("CARGO_PROFILE_TEST_DEBUG", "0");
    if let Some(rev) = &args.in_diff {
        let diff = output(
            Command::new("git")
                .current_dir(&root)
                .args(["diff", rev, "--"]),
        )
        .with_context(|| format!("git diff {rev}"))?;
        if diff.trim().is_empty() {
            println!("mutants: nothing changed since {rev}");
            return Ok(());
        }
        let path = out.join("in-diff.patch");
        std::fs::write(&path, diff).with_context(|| format!("writing {}", path.display()))?;
        cmd.arg("--in-diff").arg(path);
    }
    if let Some(filter) = &args.tests {
        // cargo-mutants passes what follows `--` to `cargo test`, whose
        // first free argument is the test name filter.
        cmd.arg("--").arg(filter);
    }
    eprintln!("xtask: {cmd:?}");
    let status = cmd.status().context("failed to start cargo mutants")?;
    // 0: all caught; 2: some missed; 3: some timed out. Anything else (1: a
    // usage error, 4: the tests fail without a mutant) means no verdict.
    if !matches!(status.code(), Some(0 | 2 | 3)) {
        bail!("cargo mutants failed: {status}");
    }
    let outcomes = Outcomes::read(&out.join("mutants.out"))?.of(&cores);
    let tally = tally(&cores, &outcomes);
    print!("{}", table(&tally));
    let missed_path = out.join("missed.txt");
    let missed = missed_list(&outcomes);
    std::fs::write(&missed_path, &missed)
        .with_context(|| format!("writing {}", missed_path.display()))?;
    if missed.is_empty() {
        println!("mutants: none missed");
    } else {
        print!("missed:\n{missed}");
        println!("mutants: missed list in {}", missed_path.display());
    }
    verdict(&tally)
}

/// The core files `--file` narrows the run to: those whose path contains
/// any of `filters`; all of them without one.
pub fn select(all: &[Core], filters: &[String]) -> Result<Vec<Core>> {
    if filters.is_empty() {
        return Ok(all.to_vec());
    }
    let chosen: Vec<Core> = all
        .iter()
        .filter(|c| filters.iter().any(|f| c.file.contains(f.as_str())))
        .copied()
        .collect();
    if chosen.is_empty() {
        let files: Vec<&str> = all.iter().map(|c| c.file).collect();
        bail!(
            "no core file matches {}; the core files are:\n  {}",
            filters.join(", "),
            files.join("\n  ")
        );
    }
    Ok(chosen)
}

/// cargo-mutants' `--file` globs and `--re` regexes for `cores`: the files
/// to parse, and the mutants to keep (a mutant is kept when any regex
/// matches its name, `FILE:LINE:COL: MUTATION [in FUNCTION]`).
pub fn mutants_filters(cores: &[Core]) -> Vec<String> {
    let mut args = Vec::new();
    for c in cores {
        args.push("--file".to_string());
        args.push(c.file.to_string());
    }
    for c in cores {
        args.push("--re".to_string());
        args.push(match c.only {
            None => format!("^{}:", regex_escape(c.file)),
            Some(f) => format!(
                "^{}:[0-9]+:[0-9]+: .*{}",
                regex_escape(c.file),
                regex_escape(f)
            ),
        });
    }
    args
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(ch) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// What cargo-mutants found: each list holds the mutants' names as it
/// writes them in `mutants.out/<outcome>.txt`.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub caught: Vec<String>,
    pub missed: Vec<String>,
    pub timeout: Vec<String>,
    pub unviable: Vec<String>,
}

impl Outcomes {
    fn read(dir: &Path) -> Result<Self> {
        let list = |name: &str| -> Result<Vec<String>> {
            let path: PathBuf = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(lines(&text)),
                // No mutant of this outcome, or none at all (a diff that
                // touches no core line): cargo-mutants may skip the file.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
            }
        };
        Ok(Self {
            caught: list("caught.txt")?,
            missed: list("missed.txt")?,
            timeout: list("timeout.txt")?,
            unviable: list("unviable.txt")?,
        })
    }
}

impl Outcomes {
    /// Only the mutants of `cores`' parts of their files. cargo-mutants'
    /// `--re` lets some mutants of the rest of a file through (its "delete
    /// field" ones); they are not counted.
    pub fn of(self, cores: &[Core]) -> Self {
        let keep = |list: Vec<String>| -> Vec<String> {
            list.into_iter()
                .filter(|name| in_core(cores, name))
                .collect()
        };
        Self {
            caught: keep(self.caught),
            missed: keep(self.missed),
            timeout: keep(self.timeout),
            unviable: keep(self.unviable),
        }
    }
}

fn in_core(cores: &[Core], name: &str) -> bool {
    let file = file_of(name);
    cores
        .iter()
        .any(|c| c.file == file && c.only.is_none_or(|f| name.contains(f)))
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The source file a mutant's name starts with.
pub fn file_of(name: &str) -> &str {
    name.split_once(':').map_or(name, |(file, _)| file)
}

/// One file's figures.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Row {
    pub file: String,
    pub complete: bool,
    pub caught: usize,
    pub missed: usize,
    pub timeout: usize,
    pub unviable: usize,
}

impl Row {
    /// Mutants that built: those a test could have caught.
    fn viable(&self) -> usize {
        self.caught + self.missed + self.timeout
    }

    /// Caught or timed out over viable, in percent. A mutant that makes a
    /// test hang is found: under nextest the hung test fails the suite by
    /// name at its time limit, as cargo-mutants' own limit ended it here.
    fn percent(&self) -> Option<f64> {
        (self.viable() > 0)
            .then(|| 100.0 * (self.caught + self.timeout) as f64 / self.viable() as f64)
    }
}

/// The figures per core file, in the order of `cores`; files without a
/// mutant in this run are left out.
pub fn tally(cores: &[Core], o: &Outcomes) -> Vec<Row> {
    let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
    let lists = [&o.caught, &o.missed, &o.timeout, &o.unviable];
    for (i, list) in lists.into_iter().enumerate() {
        for name in list {
            let file = file_of(name);
            let row = rows.entry(file).or_insert_with(|| Row {
                file: file.to_string(),
                complete: cores.iter().any(|c| c.file == file && c.complete),
                ..Row::default()
            });
            let count = match i {
                0 => &mut row.caught,
                1 => &mut row.missed,
                2 => &mut row.timeout,
                _ => &mut row.unviable,
            };
            *count += 1;
        }
    }
    let mut ordered: Vec<Row> = Vec::new();
    for c in cores {
        if let Some(r) = rows.remove(c.file) {
            ordered.push(r);
        }
    }
    ordered
}

/// The per-file table and its total line.
pub fn table(rows: &[Row]) -> String {
    let pct = |p: Option<f64>| p.map_or("-".to_string(), |p| format!("{p:.1}%"));
    let mut s = format!(
        "{:<52} {:>6} {:>6} {:>7} {:>8} {:>7}\n",
        "file (* must be complete)", "caught", "missed", "timeout", "unviable", "caught%"
    );
    let mut total = Row {
        file: "total".to_string(),
        ..Row::default()
    };
    for r in rows {
        let name = format!("{}{}", if r.complete { "* " } else { "  " }, r.file);
        s.push_str(&format!(
            "{name:<52} {:>6} {:>6} {:>7} {:>8} {:>7}\n",
            r.caught,
            r.missed,
            r.timeout,
            r.unviable,
            pct(r.percent())
        ));
        total.caught += r.caught;
        total.missed += r.missed;
        total.timeout += r.timeout;
        total.unviable += r.unviable;
    }
    s.push_str(&format!(
        "{:<52} {:>6} {:>6} {:>7} {:>8} {:>7}  (goal {GOAL_PERCENT:.0}%)\n",
        "  total",
        total.caught,
        total.missed,
        total.timeout,
        total.unviable,
        pct(total.percent())
    ));
    s
}

/// The missed mutants, one a line, sorted: what `target/mutants/missed.txt`
/// holds after a run.
pub fn missed_list(o: &Outcomes) -> String {
    let mut missed = o.missed.clone();
    missed.sort();
    missed.iter().map(|m| format!("{m}\n")).collect()
}

/// Fails when a file on the must-be-complete list has a missed mutant. The
/// overall share is a goal that is reported, not enforced.
pub fn verdict(rows: &[Row]) -> Result<()> {
    let incomplete: Vec<String> = rows
        .iter()
        .filter(|r| r.complete && r.missed > 0)
        .map(|r| format!("{} ({} missed)", r.file, r.missed))
        .collect();
    if !incomplete.is_empty() {
        bail!(
            "missed mutants in files that must have none: {}",
            incomplete.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_file_is_what_comes_before_line_and_column() {
        assert_eq!(
            file_of("lb-common/src/lib.rs:483:9: replace SgRules::allows -> bool with true"),
            "lb-common/src/lib.rs"
        );
        assert_eq!(file_of("no-colon"), "no-colon");
        assert_eq!(lines("a\n\n  b  \n"), s(&["a", "b"]));
    }

    #[test]
    fn outcome_files_are_read_and_a_missing_one_is_empty() {
        let dir = std::env::temp_dir().join(format!("xtask-mutants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("caught.txt"), "x.rs:1:1: a\nx.rs:2:1: b\n").unwrap();
        std::fs::write(dir.join("missed.txt"), "x.rs:3:1: c\n").unwrap();
        let o = Outcomes::read(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(o.caught.len(), 2);
        assert_eq!(o.missed, s(&["x.rs:3:1: c"]));
        assert!(o.timeout.is_empty() && o.unviable.is_empty());
    }

    const A: Core = Core {
        module: "a",
        file: "a/health.rs",
        only: None,
        complete: true,
    };
    const B: Core = Core {
        module: "b",
        file: "b/group.rs",
        only: Some("Group::pick"),
        complete: false,
    };

    fn outcomes() -> Outcomes {
        Outcomes {
            caught: s(&[
                "b/group.rs:1:1: replace + with -",
                "a/health.rs:1:1: replace < with <=",
                "a/health.rs:2:1: replace > with >=",
                "b/group.rs:2:1: replace == with !=",
                "b/group.rs:3:1: replace && with ||",
            ]),
            missed: s(&[
                "b/group.rs:9:1: delete !",
                "a/health.rs:7:1: replace f with ()",
            ]),
            timeout: s(&["b/group.rs:4:1: replace += with -="]),
            unviable: s(&["a/health.rs:5:1: replace f -> X with Default::default()"]),
        }
    }

    #[test]
    fn rows_follow_the_core_list_and_count_each_outcome() {
        let rows = tally(&[A, B], &outcomes());
        assert_eq!(
            rows,
            vec![
                Row {
                    file: "a/health.rs".into(),
                    complete: true,
                    caught: 2,
                    missed: 1,
                    timeout: 0,
                    unviable: 1,
                },
                Row {
                    file: "b/group.rs".into(),
                    complete: false,
                    caught: 3,
                    missed: 1,
                    timeout: 1,
                    unviable: 0,
                },
            ]
        );
        // Caught or timed out over caught + missed + timeout; unviable ones
        // built nothing.
        assert_eq!(rows[0].percent(), Some(100.0 * 2.0 / 3.0));
        assert_eq!(rows[1].percent(), Some(80.0));
        // A file with no mutant in the run has no row.
        assert_eq!(tally(&[A, B], &Outcomes::default()), vec![]);
    }

    #[test]
    fn the_table_marks_complete_files_and_totals_over_viable_mutants() {
        let t = table(&tally(&[A, B], &outcomes()));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        let cells = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            cells(lines[1]),
            s(&["*", "a/health.rs", "2", "1", "0", "1", "66.7%"])
        );
        assert_eq!(
            cells(lines[2]),
            s(&["b/group.rs", "3", "1", "1", "0", "80.0%"])
        );
        // 5 caught and 1 timeout of 5 + 2 + 1 viable.
        assert_eq!(
            cells(lines[3]),
            s(&["total", "5", "2", "1", "1", "75.0%", "(goal", "90%)"])
        );
        assert!(table(&[])
            .lines()
            .last()
            .unwrap()
            .ends_with("-  (goal 90%)"));
    }

    #[test]
    fn only_a_missed_mutant_in_a_complete_file_fails_the_run() {
        let rows = tally(&[A, B], &outcomes());
        let err = verdict(&rows).unwrap_err().to_string();
        assert!(err.contains("a/health.rs (1 missed)"), "{err}");
        assert!(!err.contains("group.rs"), "{err}");
        // Missed in a file not on the list, timeouts and unviable ones in a
        // complete one: a pass.
        let o = Outcomes {
            missed: s(&["b/group.rs:9:1: delete !"]),
            timeout: s(&["a/health.rs:4:1: replace += with -="]),
            unviable: s(&["a/health.rs:5:1: x"]),
            ..Outcomes::default()
        };
        verdict(&tally(&[A, B], &o)).unwrap();
    }

    #[test]
    fn only_the_core_part_of_a_file_counts() {
        let o = Outcomes {
            caught: s(&[
                "b/group.rs:1:1: replace + with - in Group::pick",
                "b/group.rs:2:1: delete field x from struct Self expression in Group::new",
                "a/health.rs:1:1: replace < with <= in Health::next",
                "c/other.rs:1:1: replace < with <=",
            ]),
            missed: s(&["b/group.rs:3:1: delete ! in Group::new"]),
            ..Outcomes::default()
        }
        .of(&[A, B]);
        assert_eq!(
            o.caught,
            s(&[
                "b/group.rs:1:1: replace + with - in Group::pick",
                "a/health.rs:1:1: replace < with <= in Health::next",
            ])
        );
        assert!(o.missed.is_empty());
    }

    #[test]
    fn the_missed_list_is_sorted_one_a_line() {
        assert_eq!(
            missed_list(&outcomes()),
            "a/health.rs:7:1: replace f with ()\nb/group.rs:9:1: delete !\n"
        );
        assert_eq!(missed_list(&Outcomes::default()), "");
    }

    #[test]
    fn file_narrows_to_matching_core_files_and_refuses_others() {
        let all = select(CORE, &[]).unwrap();
        assert_eq!(all, CORE.to_vec());
        let h = select(CORE, &s(&["health.rs"])).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].file, "lb-userspace/src/targets/health.rs");
        assert_eq!(select(CORE, &s(&["config/validate/"])).unwrap().len(), 8);
        let err = select(CORE, &s(&["nowhere.rs"])).unwrap_err().to_string();
        assert!(err.contains("lb-userspace/src/targets/health.rs"), "{err}");
    }

    #[test]
    fn every_core_file_exists_and_the_must_be_complete_list_is_the_issues() {
        let root = workspace_root();
        for c in CORE {
            assert!(root.join(c.file).is_file(), "{} is gone", c.file);
        }
        let mut complete: Vec<&str> = CORE
            .iter()
            .filter(|c| c.complete)
            .map(|c| c.module)
            .collect();
        complete.dedup();
        assert_eq!(
            complete,
            ["security groups", "router", "health", "framing guard"]
        );
    }

    #[test]
    fn filters_name_each_file_and_a_regex_per_core_part() {
        let args = mutants_filters(&[A, B]);
        assert_eq!(
            args,
            s(&[
                "--file",
                "a/health.rs",
                "--file",
                "b/group.rs",
                "--re",
                r"^a/health\.rs:",
                "--re",
                r"^b/group\.rs:[0-9]+:[0-9]+: .*Group::pick",
            ])
        );
        assert_eq!(
            regex_escape("lb-common/src/lib.rs"),
            r"lb\-common/src/lib\.rs"
        );
    }
}
