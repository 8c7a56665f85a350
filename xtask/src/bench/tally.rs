//! `cargo xtask bench-tally`: the keep-alive targets over many bench runs.
//!
//! On a shared two-core machine one run's verdict turns on which of the
//! host's fast and slow spells each system's runs fell in (single runs vary by
//! 10-20%). The tally reads the JSON that `cargo xtask bench` leaves in
//! `target/bench` and says, run after run, whether xalb met each keep-alive
//! target and by how much, then how often and by what margins overall.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;

use serde::Deserialize;

use super::load::Kind;
use super::report::{median, versus, L7Sample, Row, PEERS};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Bench JSON files, or directories whose timestamped JSON files are
    /// read [default: target/bench].
    paths: Vec<PathBuf>,
    /// Also count `--smoke` runs (one-second runs, one round).
    #[arg(long)]
    include_smoke: bool,
}

/// One run's keep-alive figures: xalb's medians against the peers' medians,
/// as the bench's own target list judges them, and round by round.
#[derive(Debug, Clone, PartialEq)]
struct RunFigures {
    started: String,
    /// "full", "quick" or "smoke".
    mode: String,
    rounds: usize,
    /// xalb's req/s ÷ the more of nginx's and HAProxy's.
    rps_ratio: f64,
    xalb_p99: f64,
    /// The lower of the peers' p99 and whose it is.
    peer_p99: f64,
    peer: String,
    /// Rounds in which xalb served at least both peers' req/s, and had a p99
    /// no worse than either's; None when a system missed a round.
    rounds_rps: Option<usize>,
    rounds_p99: Option<usize>,
}

impl RunFigures {
    fn rps_met(&self) -> bool {
        self.rps_ratio >= 1.0
    }

    fn p99_met(&self) -> bool {
        self.xalb_p99 <= self.peer_p99
    }
}

/// The part of a bench run's JSON the tally reads.
#[derive(Deserialize, Default)]
#[serde(default)]
struct SavedRun {
    started_utc: String,
    options: BTreeMap<String, String>,
    l7: Vec<Row<L7Sample>>,
}

impl SavedRun {
    /// "full", "quick" or "smoke".
    fn mode(&self) -> &str {
        self.options.get("mode").map_or("?", String::as_str)
    }
}

/// What a run says of keep-alive, or why it has nothing to count.
fn figures(run: &SavedRun) -> Result<RunFigures, &'static str> {
    let scenario = Kind::KeepAlive.scenario();
    let row = |system: &str| {
        run.l7
            .iter()
            .find(|r| r.scenario == scenario && r.system == system)
    };
    const MISSING: &str = "no keep-alive row for xalb, nginx and HAProxy";
    let x = row("xalb")
        .filter(|_| PEERS.iter().all(|p| row(p).is_some()))
        .ok_or(MISSING)?;
    let v = versus(&run.l7, scenario).ok_or(MISSING)?;
    let (Some(rps_ratio), Some((xalb_p99, peer_p99, peer))) = (v.rps_ratio, v.p99) else {
        return Err("a keep-alive median without req/s or p99");
    };
    Ok(RunFigures {
        started: run.started_utc.clone(),
        mode: run.mode().to_string(),
        rounds: x.samples.len(),
        rps_ratio,
        xalb_p99,
        peer_p99,
        peer: if peer == "haproxy" { "HAProxy" } else { peer }.to_string(),
        rounds_rps: v.rounds.as_ref().map(|r| r.rps),
        rounds_p99: v.rounds.as_ref().map(|r| r.p99),
    })
}

fn spread(v: Vec<f64>) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let m = median(v).unwrap_or(f64::NAN);
    format!("median {m:.2}, {lo:.2} to {hi:.2}")
}

/// How many of the non-zero `diffs` are positive, of how many, and the
/// one-sided binomial chance of at least that many if each sign were a coin
/// toss: how likely a lead this consistent is from the machine's noise alone.
fn sign_test(diffs: impl Iterator<Item = f64>) -> (usize, usize, f64) {
    let signs: Vec<bool> = diffs.filter(|d| *d != 0.0).map(|d| d > 0.0).collect();
    let (n, k) = (signs.len(), signs.iter().filter(|s| **s).count());
    // C(n, i) built up term by term stays exact enough for n in the hundreds.
    let (mut c, mut tail) = (1.0f64, 0.0f64);
    for i in 0..=n {
        if i >= k {
            tail += c;
        }
        c = c * (n - i) as f64 / (i + 1) as f64;
    }
    (k, n, tail / 2f64.powi(n as i32))
}

/// "k of n (p = ...)" for a sign test's result.
fn signs((k, n, p): (usize, usize, f64)) -> String {
    if p < 0.001 {
        format!("{k} of {n} (p < 0.001)")
    } else {
        format!("{k} of {n} (p = {p:.3})")
    }
}

/// The table of runs and the summary under it, as Markdown.
fn markdown(runs: &[RunFigures], skipped: &[(String, &str)]) -> String {
    let mut o = String::from(
        "| run (UTC) | rounds | xalb req/s ÷ better peer | xalb p99 | lower peer p99 | round by round: req/s / p99 |\n\
         |---|---:|---:|---:|---:|---|\n",
    );
    for r in runs {
        let by_round = match (r.rounds_rps, r.rounds_p99) {
            (Some(a), Some(b)) => format!("{a} / {b} of {}", r.rounds),
            _ => "n/a".into(),
        };
        o.push_str(&format!(
            "| {} | {}{} | {:.2}×{} | {:.2} ms | {:.2} ms ({}){} | {by_round} |\n",
            r.started,
            r.rounds,
            if r.mode == "full" {
                String::new()
            } else {
                format!(" ({})", r.mode)
            },
            r.rps_ratio,
            if r.rps_met() { "" } else { " (missed)" },
            r.xalb_p99,
            r.peer_p99,
            r.peer,
            if r.p99_met() { "" } else { " (missed)" },
        ));
    }
    let n = runs.len();
    let count = |f: fn(&RunFigures) -> bool| runs.iter().filter(|r| f(r)).count();
    o.push_str(&format!(
        "\n{n} runs. Keep-alive, by each run's medians (the issue's targets):\n\
         - req/s at least both peers': {} of {n} (xalb ÷ the better peer: {})\n\
         - p99 no worse than either peer's: {} of {n} (xalb ÷ the lower peer p99: {})\n\
         - both: {} of {n}\n",
        count(RunFigures::rps_met),
        spread(runs.iter().map(|r| r.rps_ratio).collect()),
        count(RunFigures::p99_met),
        spread(runs.iter().map(|r| r.xalb_p99 / r.peer_p99).collect()),
        count(|r| r.rps_met() && r.p99_met()),
    ));
    let rps = sign_test(runs.iter().map(|r| r.rps_ratio - 1.0));
    let p99 = sign_test(runs.iter().map(|r| r.peer_p99 - r.xalb_p99));
    o.push_str(&format!(
        "- sign test over the runs (ties left out; p: the chance of at least this many \
         if neither system were ahead): xalb served more in {}, had the lower p99 in {}\n",
        signs(rps),
        signs(p99),
    ));
    let paired: Vec<_> = runs
        .iter()
        .filter_map(|r| Some((r.rounds_rps?, r.rounds_p99?, r.rounds)))
        .collect();
    if !paired.is_empty() {
        let total: usize = paired.iter().map(|p| p.2).sum();
        o.push_str(&format!(
            "- round by round, over {total} rounds of {} runs: req/s at least both peers' in {}, \
             p99 no worse than either's in {}\n",
            paired.len(),
            paired.iter().map(|p| p.0).sum::<usize>(),
            paired.iter().map(|p| p.1).sum::<usize>(),
        ));
    }
    for (file, why) in skipped {
        o.push_str(&format!("- not counted: {file} ({why})\n"));
    }
    o
}

/// The timestamped JSON files under `dir` (not `latest.json`, a copy of one).
fn runs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
        })
        .collect();
    files.sort();
    Ok(files)
}

pub fn run(args: Args) -> Result<()> {
    let paths = if args.paths.is_empty() {
        vec![crate::workspace_root().join("target/bench")]
    } else {
        args.paths
    };
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            files.extend(runs_in(&p)?);
        } else {
            files.push(p);
        }
    }
    let (mut runs, mut skipped) = (Vec::new(), Vec::new());
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let run: SavedRun = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a bench report (JSON)", f.display()))?;
        let name = f.display().to_string();
        if run.mode() == "smoke" && !args.include_smoke {
            skipped.push((name, "a --smoke run"));
            continue;
        }
        match figures(&run) {
            Ok(r) => runs.push(r),
            Err(why) => skipped.push((name, why)),
        }
    }
    if runs.is_empty() {
        bail!(
            "no bench run with keep-alive figures for xalb, nginx and HAProxy among {} file(s)",
            files.len()
        );
    }
    print!("{}", markdown(&runs, &skipped));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn saved(v: Value) -> SavedRun {
        serde_json::from_value(v).unwrap()
    }

    fn point(rps: f64, p99: f64) -> Value {
        json!({ "rps": rps, "p99_ms": p99 })
    }

    /// A run whose keep-alive rows have these (req/s, p99) per round, with
    /// the median of each as the bench computes it.
    fn run(x: &[(f64, f64)], n: &[(f64, f64)], h: &[(f64, f64)]) -> Value {
        let row = |system: &str, s: &[(f64, f64)]| {
            let m = (
                median(s.iter().map(|p| p.0).collect()).unwrap(),
                median(s.iter().map(|p| p.1).collect()).unwrap(),
            );
            json!({
                "scenario": Kind::KeepAlive.scenario(),
                "system": system,
                "samples": s.iter().map(|p| point(p.0, p.1)).collect::<Vec<_>>(),
                "median": point(m.0, m.1),
            })
        };
        json!({
            "started_utc": "2026-11-29T13:39:29Z",
            "options": { "mode": "full" },
            "l7": [row("xalb", x), row("nginx", n), row("haproxy", h), row("xalb B", &[(1.0, 99.0)])],
        })
    }

    #[test]
    fn a_run_is_judged_by_its_medians_and_round_by_round() {
        let r = figures(&saved(run(
            &[(46_000.0, 3.5), (48_000.0, 2.9), (44_000.0, 2.8)],
            &[(43_000.0, 4.9), (48_000.0, 3.7), (42_000.0, 4.2)],
            &[(42_000.0, 3.3), (49_000.0, 2.7), (41_000.0, 3.0)],
        )))
        .unwrap();
        assert_eq!(r.rounds, 3);
        // Medians: xalb 46,000 against nginx's 43,000 and HAProxy's 42,000.
        assert!((r.rps_ratio - 46.0 / 43.0).abs() < 1e-9);
        assert!(r.rps_met());
        // xalb's median p99 2.9 against HAProxy's 3.0 (nginx's is 4.2).
        assert_eq!(
            (r.xalb_p99, r.peer_p99, r.peer.as_str()),
            (2.9, 3.0, "HAProxy")
        );
        assert!(r.p99_met());
        // Round 2 goes to HAProxy on both counts, round 1 on the p99.
        assert_eq!((r.rounds_rps, r.rounds_p99), (Some(2), Some(1)));
    }

    #[test]
    fn a_miss_is_a_miss_and_unpaired_rounds_are_not_paired() {
        let r = figures(&saved(run(
            &[(40_000.0, 3.1), (41_000.0, 3.0)],
            &[(42_000.0, 4.0), (43_000.0, 4.0)],
            &[(39_000.0, 2.9)],
        )))
        .unwrap();
        assert!(!r.rps_met());
        assert!(!r.p99_met());
        assert_eq!(r.peer, "HAProxy");
        assert_eq!((r.rounds_rps, r.rounds_p99), (None, None));
    }

    #[test]
    fn runs_without_all_three_keep_alive_rows_are_not_counted() {
        let mut v = run(&[(1.0, 1.0)], &[(1.0, 1.0)], &[(1.0, 1.0)]);
        v["l7"].as_array_mut().unwrap().remove(2);
        let v = saved(v);
        assert!(figures(&v).is_err());
        assert!(figures(&saved(json!({}))).is_err());
        assert!(v.mode() != "smoke");
        assert_eq!(
            saved(json!({ "options": { "mode": "smoke" } })).mode(),
            "smoke"
        );
    }

    #[test]
    fn the_summary_counts_each_target_and_the_margins() {
        let met = figures(&saved(run(&[(50.0, 2.0)], &[(40.0, 3.0)], &[(45.0, 2.5)]))).unwrap();
        let missed = figures(&saved(run(&[(40.0, 3.0)], &[(40.0, 3.5)], &[(50.0, 2.5)]))).unwrap();
        let md = markdown(
            &[met.clone(), missed, met],
            &[("a.json".into(), "a --smoke run")],
        );
        assert!(md.contains("- req/s at least both peers': 2 of 3 (xalb ÷ the better peer: median 1.11, 0.80 to 1.11)"), "{md}");
        assert!(md.contains("- p99 no worse than either peer's: 2 of 3 (xalb ÷ the lower peer p99: median 0.80, 0.80 to 1.20)"), "{md}");
        assert!(md.contains("- both: 2 of 3"), "{md}");
        assert!(
            md.contains(
                "xalb served more in 2 of 3 (p = 0.500), had the lower p99 in 2 of 3 (p = 0.500)"
            ),
            "{md}"
        );
        assert!(md.contains("over 3 rounds of 3 runs: req/s at least both peers' in 2, p99 no worse than either's in 2"), "{md}");
        assert!(
            md.contains("| 0.80× (missed) | 3.00 ms | 2.50 ms (HAProxy) (missed) |"),
            "{md}"
        );
        assert!(md.contains("not counted: a.json (a --smoke run)"), "{md}");
    }

    #[test]
    fn the_sign_test_is_the_binomial_tail() {
        // 3 of 3 positive: 1/8; ties are left out.
        let (k, n, p) = sign_test([0.1, 0.2, 0.0, 0.3].into_iter());
        assert_eq!((k, n), (3, 3));
        assert!((p - 0.125).abs() < 1e-12);
        // 9 of 12: (220 + 66 + 12 + 1) / 4096.
        let d = (0..12).map(|i| if i < 9 { 1.0 } else { -1.0 });
        let (k, n, p) = sign_test(d);
        assert_eq!((k, n), (9, 12));
        assert!((p - 299.0 / 4096.0).abs() < 1e-12);
        // None positive: certain.
        assert_eq!(sign_test([-1.0].into_iter()).2, 1.0);
        assert_eq!(signs((12, 12, 1.0 / 4096.0)), "12 of 12 (p < 0.001)");
        assert_eq!(signs((9, 12, 299.0 / 4096.0)), "9 of 12 (p = 0.073)");
    }

    #[test]
    fn directories_give_their_timestamped_runs_in_order() {
        let dir = std::env::temp_dir().join(format!("xtask-tally-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "20261129T133929Z.json",
            "20261129T120000Z.json",
            "latest.json",
            "notes.txt",
        ] {
            std::fs::write(dir.join(f), "{}").unwrap();
        }
        let got = runs_in(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["20261129T120000Z.json", "20261129T133929Z.json"]);
    }
}
