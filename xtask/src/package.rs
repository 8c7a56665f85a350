//! The Debian package: `cargo xtask package` builds
//! `target/debian/xalb_<version>_<arch>.deb` from `packaging/debian/` and the
//! release binary. The staging tree is assembled here and packed by
//! `dpkg-deb`: no debhelper, no cargo-deb, nothing beyond dpkg-dev and
//! binutils. `--test-root` also prepares the throwaway Debian 12 root that
//! the install test (`tests/tests/package.rs`) installs the package in.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{build, output, run_status, toolchain, workspace_root};

/// Where the package, its staging tree and the test root go, under the
/// workspace root.
const OUT_DIR: &str = "target/debian";
/// The minimal Debian 12 root the install test copies (as an overlay) for
/// each run; made once, reused after.
const TEST_ROOT: &str = "target/debian/bookworm-root";
/// The same with systemd, which the unit's test boots in a container.
const SYSTEMD_TEST_ROOT: &str = "target/debian/bookworm-systemd-root";
const SUITE: &str = "bookworm";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

#[derive(clap::Args)]
pub struct Args {
    /// Also make the minimal Debian 12 roots (debootstrap, once: they are
    /// reused) that the package's tests install it in.
    #[arg(long)]
    test_root: bool,
}

pub fn run(args: Args) -> Result<()> {
    let deb = build()?;
    println!("{}", deb.display());
    if args.test_root {
        println!("{}", test_root()?.display());
    }
    Ok(())
}

/// Builds the package; returns its path.
pub fn build() -> Result<PathBuf> {
    // dpkg-shlibdeps and dpkg-parsechangelog (dpkg-dev), strip (binutils);
    // dpkg-deb and gzip are essential.
    toolchain::ensure_apt(&["dpkg-dev", "binutils"])?;
    let bin = build::release_daemon()?;
    let root = workspace_root();
    let src = root.join("packaging/debian");
    let changelog = src.join("changelog");
    let version = changelog_field(&changelog, "Version")?;
    let upstream = version.rsplit_once('-').map_or(version.as_str(), |v| v.0);
    if upstream != env!("CARGO_PKG_VERSION") {
        bail!(
            "{} says {version}, the workspace is {}: add an entry for the new version",
            changelog.display(),
            env!("CARGO_PKG_VERSION")
        );
    }
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();

    let out = root.join(OUT_DIR);
    // Laid out as debhelper would, so that dpkg-shlibdeps finds
    // debian/control and the binary in its package's directory.
    let work = out.join("build");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let pkg = work.join("debian/xalb");
    let read = |name: &str| {
        fs::read(src.join(name)).with_context(|| format!("reading packaging/debian/{name}"))
    };

    let xalb = pkg.join("usr/bin/xalb");
    mkdirs(xalb.parent().expect("has a parent"))?;
    run_status(Command::new("strip").arg("-o").arg(&xalb).arg(&bin))?;
    chmod(&xalb, 0o755)?;

    put(&pkg, "etc/xalb/xalb.toml", &read("xalb.toml")?, 0o644)?;
    put(&pkg, "etc/logrotate.d/xalb", &read("logrotate")?, 0o644)?;
    // /lib rather than /usr/lib: bookworm's systemd reads both, and /lib
    // works on a system that has not merged /usr too.
    put(
        &pkg,
        "lib/systemd/system/xalb.service",
        &read("xalb.service")?,
        0o644,
    )?;
    mkdirs(&pkg.join("var/lib/xalb"))?;
    mkdirs(&pkg.join("var/log/xalb"))?;

    // The man page and completions, from the binary's own command line.
    let generate = |what: &str| output(Command::new(&xalb).args(["generate", what]));
    put(
        &pkg,
        "usr/share/man/man1/xalb.1",
        generate("man")?.as_bytes(),
        0o644,
    )?;
    gzip(&pkg.join("usr/share/man/man1/xalb.1"))?;
    for (what, path) in [
        ("bash", "usr/share/bash-completion/completions/xalb"),
        ("zsh", "usr/share/zsh/vendor-completions/_xalb"),
        ("fish", "usr/share/fish/vendor_completions.d/xalb.fish"),
    ] {
        put(&pkg, path, generate(what)?.as_bytes(), 0o644)?;
    }

    let doc = "usr/share/doc/xalb";
    put(
        &pkg,
        &format!("{doc}/copyright"),
        &read("copyright")?,
        0o644,
    )?;
    for (from, to) in [
        (changelog.clone(), "changelog.Debian"),
        (root.join("CHANGELOG.md"), "changelog"),
        (root.join("README.md"), "README.md"),
        (root.join("docs/configuration.md"), "configuration.md"),
        (root.join("docs/operating.md"), "operating.md"),
    ] {
        let text = fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        let path = format!("{doc}/{to}");
        put(&pkg, &path, &text, 0o644)?;
        gzip(&pkg.join(path))?;
    }

    // DEBIAN/: the control file last, once the tree's size is known.
    for script in ["postinst", "prerm", "postrm"] {
        put(&pkg, &format!("DEBIAN/{script}"), &read(script)?, 0o755)?;
    }
    put(&pkg, "DEBIAN/conffiles", &read("conffiles")?, 0o644)?;
    put(&pkg, "DEBIAN/md5sums", md5sums(&pkg)?.as_bytes(), 0o644)?;
    let control = String::from_utf8(read("control")?)?
        .replace("@VERSION@", &version)
        .replace("@ARCH@", &arch)
        .replace("@INSTALLED_SIZE@", &installed_size(&pkg)?.to_string())
        .replace("@DEPENDS@", &depends(&work)?);
    put(&pkg, "DEBIAN/control", control.as_bytes(), 0o644)?;
    dirs_0755(&pkg)?;
    // Owner-only, as xalb makes it itself: it holds the stickiness key.
    chmod(&pkg.join("var/lib/xalb"), 0o700)?;
    chmod(&pkg.join("var/log/xalb"), 0o750)?;

    for old in fs::read_dir(&out)? {
        let old = old?.path();
        let name = old.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("xalb_") && name.ends_with(".deb") {
            fs::remove_file(&old)?;
        }
    }
    let deb = out.join(format!("xalb_{version}_{arch}.deb"));
    // Files dated by the changelog's entry, not by this build: the same
    // source makes the same package.
    let epoch = changelog_field(&changelog, "Timestamp")?;
    run_status(
        Command::new("dpkg-deb")
            .env("SOURCE_DATE_EPOCH", epoch)
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&pkg)
            .arg(&deb),
    )?;
    eprintln!("xtask: package at {}", deb.display());
    Ok(deb)
}

/// A field of the newest entry of a Debian changelog.
fn changelog_field(changelog: &Path, field: &str) -> Result<String> {
    Ok(output(
        Command::new("dpkg-parsechangelog")
            .arg("-l")
            .arg(changelog)
            .args(["-S", field]),
    )?
    .trim()
    .to_string())
}

fn mkdirs(path: &Path) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))
}

/// Every directory 0755, whatever the umask, as a package's should be.
fn dirs_0755(dir: &Path) -> Result<()> {
    chmod(dir, 0o755)?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            dirs_0755(&path)?;
        }
    }
    Ok(())
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// Writes `rel` under the staging root with `mode`.
fn put(pkg: &Path, rel: &str, contents: &[u8], mode: u32) -> Result<()> {
    let path = pkg.join(rel);
    mkdirs(path.parent().expect("a file has a parent"))?;
    fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    chmod(&path, mode)
}

/// Compresses `path` in place to `path.gz`, without name or time in the
/// header (as Debian ships manuals and changelogs).
fn gzip(path: &Path) -> Result<()> {
    run_status(Command::new("gzip").arg("-9nf").arg(path))
}

/// Every file under the staging tree but DEBIAN/, sorted.
fn files(pkg: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, into: &mut Vec<PathBuf>) -> Result<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, into)?;
            } else {
                into.push(path);
            }
        }
        Ok(())
    }
    let mut all = Vec::new();
    for entry in fs::read_dir(pkg)? {
        let path = entry?.path();
        if path.is_dir() && !path.ends_with("DEBIAN") {
            walk(&path, &mut all)?;
        }
    }
    all.sort();
    Ok(all)
}

/// DEBIAN/md5sums, as `debsums` and `dpkg --verify` read it.
fn md5sums(pkg: &Path) -> Result<String> {
    let rel: Vec<PathBuf> = files(pkg)?
        .into_iter()
        .map(|p| p.strip_prefix(pkg).expect("under pkg").to_path_buf())
        .collect();
    output(Command::new("md5sum").current_dir(pkg).args(&rel))
}

/// Installed-Size in KiB, as dpkg-gencontrol counts it: each file rounded
/// up to a KiB, each directory one.
fn installed_size(pkg: &Path) -> Result<u64> {
    fn walk(dir: &Path) -> Result<u64> {
        let mut kib = 0;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            kib += if meta.is_dir() {
                1 + walk(&entry.path())?
            } else {
                meta.len().div_ceil(1024)
            };
        }
        Ok(kib)
    }
    let mut kib = 0;
    for entry in fs::read_dir(pkg)? {
        let entry = entry?;
        if entry.path().is_dir() && !entry.path().ends_with("DEBIAN") {
            kib += 1 + walk(&entry.path())?;
        }
    }
    Ok(kib)
}

/// The shared libraries the binary links, as Depends, from dpkg-shlibdeps
/// (run in `work`, where it finds debian/control).
fn depends(work: &Path) -> Result<String> {
    fs::write(
        work.join("debian/control"),
        "Source: xalb\n\nPackage: xalb\nArchitecture: any\n",
    )?;
    let out = output(
        Command::new("dpkg-shlibdeps")
            .current_dir(work)
            .args(["-O", "debian/xalb/usr/bin/xalb"]),
    )?;
    let deps = out
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .context("dpkg-shlibdeps printed no shlibs:Depends")?;
    Ok(deps.trim().to_string())
}

/// The throwaway Debian 12 roots for the package's tests, made by
/// debootstrap (minbase) from this machine's own mirror, once: a minimal
/// one to install the package in, and one with systemd that the unit's
/// test boots (systemd-nspawn, which this installs). Returns the first.
pub fn test_root() -> Result<PathBuf> {
    toolchain::ensure_apt(&["debootstrap", "systemd-container"])?;
    let root = workspace_root();
    debootstrap(&root.join(TEST_ROOT), &[])?;
    debootstrap(
        &root.join(SYSTEMD_TEST_ROOT),
        &["systemd", "systemd-sysv", "iproute2", "curl"],
    )?;
    Ok(root.join(TEST_ROOT))
}

/// A minbase root at `dir` with `include` added, unless there is one.
fn debootstrap(dir: &Path, include: &[&str]) -> Result<()> {
    // Renamed into place only once debootstrap has finished.
    if dir.is_dir() {
        return Ok(());
    }
    let partial = dir.with_extension("partial");
    if partial.exists() {
        // An interrupted debootstrap can leave /proc or /sys mounted in
        // it; rm must not descend into those.
        unmount_under(&partial)?;
        run_status(
            Command::new("rm")
                .args(["-rf", "--one-file-system"])
                .arg(&partial),
        )?;
    }
    let mirror = mirror()?;
    eprintln!(
        "xtask: making a minimal Debian {SUITE} root{} for the package's tests from {mirror}",
        if include.is_empty() {
            ""
        } else {
            " with systemd"
        }
    );
    let mut cmd = Command::new("debootstrap");
    cmd.arg("--variant=minbase");
    if !include.is_empty() {
        cmd.arg(format!("--include={}", include.join(",")));
    }
    run_status(cmd.arg(SUITE).arg(&partial).arg(&mirror))?;
    unmount_under(&partial)?;
    fs::rename(&partial, dir)?;
    Ok(())
}

/// The Debian mirror this machine's apt uses for bookworm (deb822
/// `.sources` files, then `sources.list`), else deb.debian.org.
fn mirror() -> Result<String> {
    let mut sources: Vec<PathBuf> = fs::read_dir("/etc/apt/sources.list.d")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    sources.sort();
    for path in sources
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sources"))
    {
        let text = fs::read_to_string(path).unwrap_or_default();
        if let Some(uri) = deb822_mirror(&text) {
            return Ok(uri);
        }
    }
    let list = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    Ok(list_mirror(&list).unwrap_or_else(|| DEFAULT_MIRROR.to_string()))
}

/// The first URI of a deb822 stanza of type `deb` for the suite.
fn deb822_mirror(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let enabled = field("Enabled").is_none_or(|v| v != "no");
        let deb = field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let suite = field("Suites").is_some_and(|s| s.split_whitespace().any(|s| s == SUITE));
        if enabled && deb && suite {
            if let Some(uri) =
                field("URIs").and_then(|u| u.split_whitespace().next().map(String::from))
            {
                return Some(uri);
            }
        }
    }
    None
}

/// The URI of the first one-line `deb URI bookworm ...` entry.
fn list_mirror(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? != "deb" {
            return None;
        }
        let mut uri = words.next()?;
        // Options come in brackets before the URI.
        if uri.starts_with('[') {
            while !uri.ends_with(']') {
                uri = words.next()?;
            }
            uri = words.next()?;
        }
        (words.next()? == SUITE).then(|| uri.to_string())
    })
}

/// Unmounts everything mounted at or below `dir`, deepest first.
fn unmount_under(dir: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort();
    for p in points.iter().rev() {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes())?;
        // SAFETY: a NUL-terminated path; MNT_DETACH has no other
        // precondition.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = std::io::Error::last_os_error();
            bail!("umount {}: {e}", p.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_is_read_from_either_kind_of_apt_source() {
        let deb822 = "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n\
                      Types: deb\nURIs: http://old.example/debian\nSuites: bullseye\n\n\
                      Types: deb\nURIs: http://m.example/debian http://n.example/debian\n\
                      Suites: bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(
            deb822_mirror(deb822).as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(
            deb822_mirror("Types: deb\nURIs: http://x/\nSuites: bookworm\nEnabled: no\n"),
            None
        );
        let list = "# comment\ndeb-src http://s/ bookworm main\n\
                    deb [signed-by=/k.gpg arch=amd64] http://l.example/debian bookworm main\n";
        assert_eq!(
            list_mirror(list).as_deref(),
            Some("http://l.example/debian")
        );
        assert_eq!(list_mirror("deb http://x/ bullseye main\n"), None);
    }
}
