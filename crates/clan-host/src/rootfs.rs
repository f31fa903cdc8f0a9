//! The shared, read-only Debian root filesystem every test machine and micro VM boots from.
//!
//! Built once with `debootstrap --variant=minbase` from the mirror apt already uses, then
//! cached under a name derived from the suite, the package list and the recipe below. A build
//! happens in a temporary directory under an exclusive lock and is renamed into place, so a
//! killed build never leaves a half cache. Machines never write here: each gets an overlay.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::tools::{self as process, DEBOOTSTRAP};

/// What a deployed machine needs beyond minbase, as a standard Debian server has it: systemd
/// as init, sshd, D-Bus for `systemctl`/`hostnamectl`, `ip`, `ps`, rsync for uploads and
/// nftables for firewalls. `useradd`, `apt` and `dpkg` are part of minbase already.
pub const BASE_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "procps",
    "rsync",
    "nftables",
];

/// Bump when [`prepare`] changes, so caches built by an older recipe are rebuilt.
const RECIPE: u32 = 1;

/// Where caches live unless `CLAN_TESTBED_CACHE` says otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/clan-testbed";

/// `CLAN_TESTBED_CACHE`, else [`DEFAULT_CACHE_DIR`].
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("CLAN_TESTBED_CACHE")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR), PathBuf::from)
}

/// The full, sorted and de-duplicated package list for a rootfs with `extra` packages.
fn package_list(extra: &[String]) -> Vec<String> {
    let mut packages: Vec<String> = BASE_PACKAGES
        .iter()
        .map(|p| (*p).to_owned())
        .chain(extra.iter().cloned())
        .collect();
    packages.sort();
    packages.dedup();
    packages
}

/// The cache directory name for `suite` and `packages`.
fn cache_name(suite: &str, packages: &[String]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!(
        "recipe={RECIPE}\nsuite={suite}\npackages={}\n",
        packages.join(",")
    ));
    let digest = hex::encode(hasher.finalize());
    format!("debian-{suite}-{}", &digest[..16])
}

/// The Debian suite of the host (`VERSION_CODENAME` in /etc/os-release): guests share the
/// host's glibc, so a `clan` binary built here runs inside them.
pub fn host_suite() -> Result<String> {
    let text =
        fs::read_to_string("/etc/os-release").map_err(clan_error::io("read", "/etc/os-release"))?;
    text.lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|value| value.trim_matches('"').to_owned())
        .filter(|suite| !suite.is_empty())
        .ok_or(Error::NoSuite)
}

/// The mirror to bootstrap from: `CLAN_TESTBED_MIRROR`, else the first apt source that
/// offers `suite`.
fn mirror(suite: &str) -> Result<String> {
    if let Some(mirror) = std::env::var_os("CLAN_TESTBED_MIRROR").filter(|m| !m.is_empty()) {
        return Ok(mirror.to_string_lossy().into_owned());
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut extra: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        extra.sort();
        files.extend(extra);
    }
    files
        .iter()
        .filter_map(|path| {
            let text = fs::read_to_string(path).ok()?;
            let deb822 = path.extension().is_some_and(|ext| ext == "sources");
            mirror_in_sources(&text, deb822, suite)
        })
        .next()
        .ok_or_else(|| Error::NoMirror {
            suite: suite.to_owned(),
        })
}

/// The URI of the first `deb` source in `text` offering `suite`, in one-line or deb822 format.
fn mirror_in_sources(text: &str, deb822: bool, suite: &str) -> Option<String> {
    if deb822 {
        text.split("\n\n").find_map(|stanza| {
            let field = |name: &str| {
                stanza.lines().find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_owned())
                })
            };
            let is_deb = field("Types")?.split_whitespace().any(|t| t == "deb");
            let has_suite = field("Suites")?.split_whitespace().any(|s| s == suite);
            let uri = field("URIs")?.split_whitespace().next()?.to_owned();
            (is_deb && has_suite).then_some(uri)
        })
    } else {
        text.lines().find_map(|line| {
            let mut words = line.split('#').next()?.split_whitespace();
            if words.next()? != "deb" {
                return None;
            }
            let mut uri = words.next()?;
            if uri.starts_with('[') {
                while !uri.ends_with(']') {
                    uri = words.next()?;
                }
                uri = words.next()?;
            }
            (words.next()? == suite).then(|| uri.to_owned())
        })
    }
}

/// The cached root filesystem of the host's Debian suite with `extra` packages, built first
/// if missing, for other runners of machines (the micro VMs) that boot the same tree.
pub fn root_filesystem(cache_dir: &Path, extra: &[String], progress: fn(&str)) -> Result<PathBuf> {
    ensure(cache_dir, &host_suite()?, extra, progress)
}

/// The cached root filesystem for `suite` with `extra` packages, built first if missing.
pub fn ensure(
    cache_dir: &Path,
    suite: &str,
    extra: &[String],
    progress: fn(&str),
) -> Result<PathBuf> {
    let packages = package_list(extra);
    let name = cache_name(suite, &packages);
    let target = cache_dir.join(&name);
    if target.is_dir() {
        return Ok(target);
    }
    fs::create_dir_all(cache_dir)
        .map_err(clan_error::io("create the cache directory", cache_dir))?;
    let lock_path = cache_dir.join(".lock");
    let lock = fs::File::create(&lock_path).map_err(clan_error::io("create", &lock_path))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|errno| clan_error::io("lock", &lock_path)(errno.into()))?;
    // Another process may have finished the same build while we waited for the lock.
    if target.is_dir() {
        return Ok(target);
    }
    remove_stale_builds(cache_dir)?;
    process::require(DEBOOTSTRAP)?;
    let mirror = mirror(suite)?;
    progress(&format!(
        "building the Debian {suite} root filesystem from {mirror} (once; about 35 s)"
    ));
    let build = cache_dir.join(format!(".build-{name}"));
    process::run(
        process::command(DEBOOTSTRAP)
            .arg("--variant=minbase")
            .arg(format!("--include={}", packages.join(",")))
            .arg(suite)
            .arg(&build)
            .arg(&mirror),
    )?;
    prepare(&build)?;
    fs::rename(&build, &target).map_err(clan_error::io(
        "move the finished root filesystem to",
        &target,
    ))?;
    Ok(target)
}

/// Removes leftovers of builds that were killed; only called while holding the lock, so no
/// build is running.
fn remove_stale_builds(cache_dir: &Path) -> Result<()> {
    let entries = fs::read_dir(cache_dir).map_err(clan_error::io("list", cache_dir))?;
    for entry in entries.filter_map(std::result::Result::ok) {
        if entry.file_name().to_string_lossy().starts_with(".build-") {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(clan_error::io("remove the stale build", &path))?;
        }
    }
    Ok(())
}

/// Turns a fresh debootstrap tree into a template for many machines: no shared identity
/// (host keys, hostname, machine id are per machine, seeded into each overlay), sshd by key
/// only, and nothing that runs by itself and could hold the dpkg lock during a test.
fn prepare(root: &Path) -> Result<()> {
    let ssh_dir = root.join("etc/ssh");
    let entries = fs::read_dir(&ssh_dir).map_err(clan_error::io("list", &ssh_dir))?;
    for entry in entries.filter_map(std::result::Result::ok) {
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            let path = entry.path();
            fs::remove_file(&path).map_err(clan_error::io("remove", &path))?;
        }
    }
    for identity in ["etc/hostname", "etc/machine-id"] {
        let path = root.join(identity);
        if path.exists() {
            fs::remove_file(&path).map_err(clan_error::io("remove", &path))?;
        }
    }
    let sshd_conf = ssh_dir.join("sshd_config.d/clan-testbed.conf");
    fs::write(
        &sshd_conf,
        "# clan-testbed: one ed25519 host key per machine, keys only.\n\
         HostKey /etc/ssh/ssh_host_ed25519_key\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n",
    )
    .map_err(clan_error::io("write", &sshd_conf))?;
    let units = root.join("etc/systemd/system");
    for unit in [
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "console-getty.service",
    ] {
        let link = units.join(unit);
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link).map_err(clan_error::io("remove", &link))?;
        }
        std::os::unix::fs::symlink("/dev/null", &link).map_err(clan_error::io("mask", &link))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_name_ignores_order_and_duplicates_but_not_content() {
        let a = cache_name("bookworm", &package_list(&["curl".into(), "rsync".into()]));
        let b = cache_name(
            "bookworm",
            &package_list(&["rsync".into(), "curl".into(), "curl".into()]),
        );
        assert_eq!(a, b);
        assert_ne!(a, cache_name("bookworm", &package_list(&[])));
        assert_ne!(a, cache_name("trixie", &package_list(&["curl".into()])));
        assert!(a.starts_with("debian-bookworm-"));
    }

    #[test]
    fn mirror_from_deb822_skips_other_suites() {
        let text = "Types: deb\nURIs: https://example.org/node\nSuites: nodistro\nComponents: main\n\n\
                    Types: deb deb-src\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(
            mirror_in_sources(text, true, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(mirror_in_sources(text, true, "trixie"), None);
    }

    #[test]
    fn mirror_from_one_line_format_with_options() {
        let text = "# deb http://old/debian bookworm main\n\
                    deb-src http://src/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n";
        assert_eq!(
            mirror_in_sources(text, false, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(mirror_in_sources("deb [broken", false, "bookworm"), None);
    }
}
