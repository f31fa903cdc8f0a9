//! One machine's VM: its directory (disk, keys, `ssh_config`, console log, QMP socket, the
//! state of the running VM), launching QEMU, waiting for sshd, stopping, listing.
//!
//! Layout of `<vms-dir>/<machine>/` (0700): `disk.qcow2` the machine's disk, a copy-on-write
//! overlay of the shared root image kept across runs (`disk.base` names its backing image; a
//! new image means a new disk), `host_key` the first boot's host key, `id_ed25519` the key the
//! runner logs in with, `known_hosts` and `ssh_config` for OpenSSH, `initrd.img`,
//! `console.log`, `qmp.sock`, `qemu.pid` and `run.json` while it runs.
//!
//! QEMU runs daemonized, so a VM outlives the command that started it; `run.json` and the
//! PID (checked against QEMU's command line before it is trusted) find it again.

use std::fs;
use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::accel::{Accel, Mode};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::process::{self, QEMU, QEMU_IMG, SSH_KEYGEN};

/// Units a VM has no use for, masked on the kernel command line (the image stays as it is):
/// terminals on consoles nobody types into, clock and hardware setup a VM does not have, and
/// systemd-networkd (`/init` configures the network before systemd starts; networkd alone
/// held sshd back 4 s under TCG), kernel debug file systems and modules never used here, utmp
/// records and moving the journal to disk (it stays in /run: each boot's own).
pub const MASKED_UNITS: &[&str] = &[
    "systemd-networkd.service",
    "systemd-networkd.socket",
    "systemd-networkd-wait-online.service",
    "systemd-network-generator.service",
    "modprobe@dm_mod.service",
    "modprobe@drm.service",
    "modprobe@loop.service",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "dev-hugepages.mount",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-journal-flush.service",
    "serial-getty@ttyS0.service",
    "getty@tty1.service",
    "systemd-timesyncd.service",
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "fstrim.timer",
    "systemd-hwdb-update.service",
    "systemd-pstore.service",
    "dpkg-db-backup.timer",
    "systemd-tmpfiles-clean.timer",
];

/// A host port forwarded to a guest port (`[ADDRESS:]HOST:GUEST`, TCP, loopback by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    pub address: IpAddr,
    pub host: u16,
    pub guest: u16,
}

impl FromStr for Publish {
    type Err = Error;

    fn from_str(value: &str) -> Result<Publish> {
        let bad = |reason| Error::InvalidPublish {
            value: value.to_owned(),
            reason,
        };
        let (rest, guest) = value
            .rsplit_once(':')
            .ok_or(bad("expected HOST_PORT:GUEST_PORT"))?;
        let (address, host) = match rest.rsplit_once(':') {
            Some((address, host)) => (
                address
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
                    .map_err(|_| bad("the address is not an IP address"))?,
                host,
            ),
            None => (IpAddr::V4(Ipv4Addr::LOCALHOST), rest),
        };
        let port = |text: &str| text.parse::<u16>().ok().filter(|p| *p != 0);
        Ok(Publish {
            address,
            host: port(host).ok_or(bad("the host port is not a port number"))?,
            guest: port(guest).ok_or(bad("the guest port is not a port number"))?,
        })
    }
}

impl std::fmt::Display for Publish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {}",
            SocketAddr::new(self.address, self.host),
            self.guest
        )
    }
}

/// A VM on a private network shared with other VMs (a fleet): a tap device QEMU creates and
/// the caller moves onto the network's bridge, and the guest's address there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lan {
    pub tap: String,
    /// `ADDRESS/PREFIX`.
    pub address: String,
    pub mac: String,
}

/// What to boot.
pub struct RunOptions {
    pub machine: String,
    /// Holds one directory per machine.
    pub vms_dir: PathBuf,
    /// Where the root filesystem and image are cached.
    pub cache_dir: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    pub publish: Vec<Publish>,
    pub lan: Option<Lan>,
    pub boot_timeout: Duration,
    /// Messages about slow one-time steps (building the image).
    pub progress: fn(&str),
}

/// A running VM, as `run.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Running {
    pub machine: String,
    pub pid: i32,
    /// sshd's port on 127.0.0.1.
    pub ssh_port: u16,
    pub publish: Vec<Publish>,
    pub lan: Option<Lan>,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    pub dir: PathBuf,
    pub console_log: PathBuf,
    pub ssh_config: PathBuf,
    /// Seconds since the epoch.
    pub started: u64,
}

impl Running {
    /// `root@127.0.0.1:<port>`, the deploy target.
    pub fn target_host(&self) -> String {
        format!("root@127.0.0.1:{}", self.ssh_port)
    }
}

/// How long the parts of a boot took, from the console's `clan-vm:` markers (guest uptime)
/// and the host's clock.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootTimes {
    /// From QEMU's launch to sshd's banner, measured on the host.
    pub launch_to_sshd_s: f64,
    /// Kernel start to the initramfs running.
    pub kernel_s: Option<f64>,
    /// The initramfs, up to handing over to systemd.
    pub initramfs_s: Option<f64>,
    /// systemd, up to sshd answering (the rest of `launch_to_sshd_s`).
    pub systemd_to_sshd_s: Option<f64>,
}

/// A booted VM.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Booted {
    pub running: Running,
    pub times: BootTimes,
    /// Whether the machine's disk was made new for this boot (first run or a new image).
    pub new_disk: bool,
}

/// One machine's VM directory.
#[derive(Debug, Clone)]
pub struct VmDir {
    pub machine: String,
    pub dir: PathBuf,
}

impl VmDir {
    pub fn new(vms_dir: &Path, machine: &str) -> VmDir {
        VmDir {
            machine: machine.to_owned(),
            dir: vms_dir.join(machine),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn console_log(&self) -> PathBuf {
        self.path("console.log")
    }

    pub fn ssh_config(&self) -> PathBuf {
        self.path("ssh_config")
    }

    fn qmp_socket(&self) -> PathBuf {
        self.path("qmp.sock")
    }

    fn state_file(&self) -> PathBuf {
        self.path("run.json")
    }

    /// The running VM, or `None` when it is not running (a stale `run.json` of a VM that
    /// died is removed).
    pub fn running(&self) -> Result<Option<Running>> {
        let path = self.state_file();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(clan_error::io("read", &path)(e).into()),
        };
        let running: Running = serde_json::from_str(&text).map_err(|source| Error::StateFile {
            path: path.clone(),
            source,
        })?;
        if self.is_our_qemu(running.pid) {
            Ok(Some(running))
        } else {
            let _ = fs::remove_file(&path);
            Ok(None)
        }
    }

    /// Whether `pid` is the QEMU of this VM (its command line names this VM's QMP socket),
    /// so a reused PID is never signalled.
    fn is_our_qemu(&self, pid: i32) -> bool {
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let socket = self.qmp_socket();
        let needle = format!("unix:{},server=on,wait=off", socket.display());
        cmdline
            .split(|byte| *byte == 0)
            .any(|word| word == needle.as_bytes())
    }
}

/// Where the VMs of the clan at `clan_dir` live: `CLAN_VM_DIR`, else
/// `$XDG_STATE_HOME/clan/vms` (`~/.local/state/clan/vms`), in a directory named after the
/// clan's path, so two clans with a machine of the same name never share a disk. Outside the
/// clan directory: a repository never decides where VM state is written.
pub fn vms_dir(clan_dir: &Path) -> PathBuf {
    use sha2::Digest as _;
    let base = std::env::var_os("CLAN_VM_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_STATE_HOME")
                .filter(|d| !d.is_empty())
                .map(|d| PathBuf::from(d).join("clan/vms"))
        })
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|d| PathBuf::from(d).join(".local/state/clan/vms"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("clan-vms"));
    let canonical = fs::canonicalize(clan_dir).unwrap_or_else(|_| clan_dir.to_owned());
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    base.join(&hex::encode(digest)[..16])
}

/// The machine names with a VM directory under `vms_dir`, sorted.
pub fn machines(vms_dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(vms_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(clan_error::io("list", vms_dir)(e).into()),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Makes `path` a 0700 directory in a tree no other user can change (a HOME someone else owns
/// under `sudo -E`, or a `/tmp/clan-vms` planted by another user, would let them point the
/// VM's keys and disks anywhere root can write).
fn private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(clan_error::io("create", path))?;
    if !clan_fs::private_ancestry(path) {
        return Err(Error::SharedStateDir {
            path: path.to_owned(),
        });
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        .map_err(|e| clan_error::io("restrict", path)(e).into())
}

fn write(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    clan_fs::write_file(path, content, clan_fs::WriteOptions::new(mode)).map_err(Error::from)
}

/// An ed25519 key pair at `path` (and `path.pub`), made once.
fn key_pair(path: &Path, comment: &str) -> Result<()> {
    if path.is_file() && path.with_extension("pub").is_file() {
        return Ok(());
    }
    let _ = fs::remove_file(path);
    process::run(
        process::command(SSH_KEYGEN)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
    )?;
    Ok(())
}

/// A free TCP port on 127.0.0.1 for sshd's forward.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(clan_error::io("bind a port on", "127.0.0.1"))?;
    Ok(listener
        .local_addr()
        .map_err(clan_error::io("read the port of", "127.0.0.1"))?
        .port())
}

/// The TSC frequency the guest is told, so it skips calibrating it (under TCG about one boot
/// in seven hangs there).
fn tsc_khz() -> Option<u64> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find(|line| line.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64)
}

/// The kernel command line.
fn kernel_args(machine: &str, lan: Option<&Lan>) -> String {
    let mut args = vec![
        "console=ttyS0".to_owned(),
        "panic=-1".to_owned(),
        "net.ifnames=0".to_owned(),
        "quiet".to_owned(),
        "systemd.show_status=false".to_owned(),
        format!("clan.hostname={machine}"),
    ];
    if let Some(khz) = tsc_khz() {
        args.push(format!("tsc_early_khz={khz}"));
    }
    if let Some(lan) = lan {
        args.push(format!("clan.lan={}", lan.address));
    }
    args.extend(
        MASKED_UNITS
            .iter()
            .map(|unit| format!("systemd.mask={unit}")),
    );
    args.join(" ")
}

/// QEMU's arguments for `vm`.
fn qemu_args(
    vm: &VmDir,
    image: &Image,
    options: &RunOptions,
    accel: &Accel,
    ssh_port: u16,
) -> Vec<String> {
    let path = |name: &str| vm.path(name).display().to_string();
    let mut forwards = format!("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22");
    for publish in &options.publish {
        forwards.push_str(&format!(
            ",hostfwd=tcp:{}:{}-:{}",
            publish.address, publish.host, publish.guest
        ));
    }
    let mut args: Vec<String> = [
        "-name",
        &format!("clan-vm-{}", vm.machine),
        "-M",
        "microvm,rtc=on",
        "-accel",
        accel.mode.as_str(),
        "-cpu",
        match accel.mode {
            Mode::Kvm => "host",
            Mode::Tcg => "max",
        },
        "-smp",
        &options.cpus.to_string(),
        "-m",
        &options.memory_mib.to_string(),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-daemonize",
        "-pidfile",
        &path("qemu.pid"),
        "-chardev",
        &format!("file,id=console,path={}", path("console.log")),
        "-serial",
        "chardev:console",
        "-kernel",
        &image.vmlinuz.display().to_string(),
        "-initrd",
        &path("initrd.img"),
        "-append",
        &kernel_args(&vm.machine, options.lan.as_ref()),
        "-no-reboot",
        "-global",
        "virtio-mmio.force-legacy=false",
        "-drive",
        &format!(
            "id=disk,file={},format=qcow2,if=none,discard=unmap",
            path("disk.qcow2")
        ),
        "-device",
        "virtio-blk-device,drive=disk",
        "-netdev",
        &forwards,
        "-device",
        "virtio-net-device,netdev=n0",
        "-device",
        "virtio-rng-device",
        "-qmp",
        &format!("unix:{},server=on,wait=off", vm.qmp_socket().display()),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some(lan) = &options.lan {
        args.extend([
            "-netdev".to_owned(),
            format!("tap,id=n1,ifname={},script=no,downscript=no", lan.tap),
            "-device".to_owned(),
            format!("virtio-net-device,netdev=n1,mac={}", lan.mac),
        ]);
    }
    args
}

/// The machine's disk, made new from `image` when missing or backed by another image.
fn ensure_disk(vm: &VmDir, image: &Image) -> Result<bool> {
    let disk = vm.path("disk.qcow2");
    let base_file = vm.path("disk.base");
    let base = image.disk.display().to_string();
    if disk.is_file() && fs::read_to_string(&base_file).is_ok_and(|b| b == base) {
        return Ok(false);
    }
    let partial = vm.path("disk.qcow2.new");
    let _ = fs::remove_file(&partial);
    process::run(
        process::command(QEMU_IMG)
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&image.disk)
            .arg(&partial),
    )?;
    fs::rename(&partial, &disk).map_err(clan_error::io("move the new disk to", &disk))?;
    write(&base_file, base.as_bytes(), 0o600)?;
    Ok(true)
}

/// Boots `options.machine` and waits for its sshd. Fails without starting anything when the
/// VM already runs, a tool is missing or a published port is taken; a VM that does not boot
/// in time is stopped and its console log shown.
pub fn run(options: &RunOptions, accel: &Accel) -> Result<Booted> {
    for tool in process::TOOLS {
        process::require(*tool)?;
    }
    let vm = VmDir::new(&options.vms_dir, &options.machine);
    private_dir(&vm.dir)?;
    let lock = lock(&vm)?;
    if let Some(running) = vm.running()? {
        return Err(Error::AlreadyRunning {
            machine: vm.machine.clone(),
            pid: running.pid,
        });
    }
    for publish in &options.publish {
        TcpListener::bind((publish.address, publish.host)).map_err(|source| Error::PortTaken {
            machine: vm.machine.clone(),
            address: publish.address,
            port: publish.host,
            source,
        })?;
    }
    let image = Image::ensure(&options.cache_dir, options.progress)?;
    let new_disk = ensure_disk(&vm, &image)?;

    let host_key = vm.path("host_key");
    key_pair(&host_key, &vm.machine)?;
    let client_key = vm.path("id_ed25519");
    key_pair(&client_key, &format!("clan-vm-{}", vm.machine))?;
    let read = |path: PathBuf| fs::read(&path).map_err(clan_error::io("read", &path));
    let host_key_pub = read(host_key.with_extension("pub"))?;
    let initrd = crate::initramfs::build(
        &image.root,
        &image.kernel_version,
        &crate::initramfs::Seed {
            host_key: &read(host_key.clone())?,
            host_key_pub: &host_key_pub,
            authorized_keys: &read(client_key.with_extension("pub"))?,
        },
    )?;
    write(&vm.path("initrd.img"), &initrd, 0o600)?;

    let ssh_port = free_port()?;
    let host_key_line = String::from_utf8_lossy(&host_key_pub);
    let key = host_key_line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    write(
        &vm.path("known_hosts"),
        format!("[127.0.0.1]:{ssh_port} {key}\n").as_bytes(),
        0o600,
    )?;
    write(
        &vm.ssh_config(),
        format!(
            "# clan vms: machine {machine}'s VM\nHost *\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n",
            machine = vm.machine,
            key = client_key.display(),
            known = vm.path("known_hosts").display(),
        )
        .as_bytes(),
        0o600,
    )?;
    let _ = fs::remove_file(vm.console_log());
    let _ = fs::remove_file(vm.qmp_socket());

    let launched = Instant::now();
    let args = qemu_args(&vm, &image, options, accel, ssh_port);
    let output = process::command(QEMU)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| clan_host::Error::Spawn {
            command: QEMU.name.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Launch {
            machine: vm.machine.clone(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let pid_file = vm.path("qemu.pid");
    let pid: i32 = fs::read_to_string(&pid_file)
        .map_err(clan_error::io("read", &pid_file))?
        .trim()
        .parse()
        .map_err(|_| Error::Launch {
            machine: vm.machine.clone(),
            stderr: format!("no PID in {}", pid_file.display()),
        })?;
    let running = Running {
        machine: vm.machine.clone(),
        pid,
        ssh_port,
        publish: options.publish.clone(),
        lan: options.lan.clone(),
        accel: accel.clone(),
        memory_mib: options.memory_mib,
        cpus: options.cpus,
        dir: vm.dir.clone(),
        console_log: vm.console_log(),
        ssh_config: vm.ssh_config(),
        started: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    write(
        &vm.state_file(),
        &serde_json::to_vec_pretty(&running).unwrap_or_default(),
        0o600,
    )?;
    drop(lock);

    let deadline = launched + options.boot_timeout;
    loop {
        if sshd_answers(ssh_port) {
            break;
        }
        if !vm.is_our_qemu(pid) {
            let _ = fs::remove_file(vm.state_file());
            return Err(Error::Exited {
                machine: vm.machine.clone(),
                log: vm.console_log(),
                tail: console_tail(&vm.console_log()),
            });
        }
        if Instant::now() >= deadline {
            kill(&vm, pid);
            return Err(Error::BootTimeout {
                machine: vm.machine.clone(),
                seconds: options.boot_timeout.as_secs(),
                log: vm.console_log(),
                tail: console_tail(&vm.console_log()),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let launch_to_sshd_s = launched.elapsed().as_secs_f64();
    let console = fs::read_to_string(vm.console_log()).unwrap_or_default();
    Ok(Booted {
        running,
        times: boot_times(&console, launch_to_sshd_s),
        new_disk,
    })
}

/// The parts of a boot from the console markers `/init` prints.
pub fn boot_times(console: &str, launch_to_sshd_s: f64) -> BootTimes {
    let marker = |prefix: &str| {
        console.lines().find_map(|line| {
            let rest = line.split("clan-vm: ").nth(1)?.strip_prefix(prefix)?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
    };
    let initramfs = marker("initramfs at ");
    let switch = marker("switching to systemd at ");
    BootTimes {
        launch_to_sshd_s,
        kernel_s: initramfs,
        initramfs_s: initramfs.zip(switch).map(|(a, b)| b - a),
        systemd_to_sshd_s: switch.map(|s| launch_to_sshd_s - s),
    }
}

/// Whether sshd sends its banner on `port` (user-mode networking accepts the connection
/// itself even before the guest listens, so a connect alone proves nothing).
fn sshd_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_secs(1),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut banner = [0u8; 8];
    let mut read = 0;
    while read < 4 {
        match stream.read(&mut banner[read..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => read += n,
        }
    }
    banner.starts_with(b"SSH-")
}

/// The last lines of a console log, for errors.
pub fn console_tail(path: &Path) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(20);
    let tail = lines[start..].join("\n");
    if tail.is_empty() {
        "(the console log is empty)".to_owned()
    } else {
        tail
    }
}

/// An exclusive lock on the machine's VM directory while a VM is launched or stopped.
fn lock(vm: &VmDir) -> Result<fs::File> {
    let path = vm.path("lock");
    let file = fs::File::create(&path).map_err(clan_error::io("create", &path))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|errno| clan_error::io("lock", &path)(errno.into()))?;
    Ok(file)
}

/// Ends QEMU `pid` at once (a VM that failed to boot).
fn kill(vm: &VmDir, pid: i32) {
    if vm.is_our_qemu(pid) {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    let _ = fs::remove_file(vm.state_file());
}

/// Shuts the machine's VM down: ACPI power button over QMP, then QMP `quit` when the guest
/// has not powered off within `grace`.
pub fn stop(vms_dir: &Path, machine: &str, grace: Duration) -> Result<Running> {
    let vm = VmDir::new(vms_dir, machine);
    if !vm.dir.is_dir() {
        return Err(Error::NotRunning {
            machine: machine.to_owned(),
        });
    }
    let _lock = lock(&vm)?;
    let running = vm.running()?.ok_or_else(|| Error::NotRunning {
        machine: machine.to_owned(),
    })?;
    crate::qmp::powerdown(machine, &vm.qmp_socket())?;
    let deadline = Instant::now() + grace;
    while vm.is_our_qemu(running.pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if vm.is_our_qemu(running.pid) {
        let _ = crate::qmp::quit(machine, &vm.qmp_socket());
        let deadline = Instant::now() + Duration::from_secs(5);
        while vm.is_our_qemu(running.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        kill(&vm, running.pid);
    }
    let _ = fs::remove_file(vm.state_file());
    Ok(running)
}

/// Every machine with a VM directory and its running VM, if any.
pub fn list(vms_dir: &Path) -> Result<Vec<(String, Option<Running>)>> {
    machines(vms_dir)?
        .into_iter()
        .map(|machine| {
            let running = VmDir::new(vms_dir, &machine).running()?;
            Ok((machine, running))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_parses_ports_and_addresses_and_rejects_the_rest() {
        let local: Publish = "8080:80".parse().unwrap();
        assert_eq!(
            local,
            Publish {
                address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                host: 8080,
                guest: 80
            }
        );
        let any: Publish = "0.0.0.0:2222:22".parse().unwrap();
        assert_eq!(any.address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let v6: Publish = "[::1]:8443:443".parse().unwrap();
        assert_eq!(v6.address, "::1".parse::<IpAddr>().unwrap());
        for bad in ["80", "x:80", "8080:0", "8080:70000", "nohost:1:2", ""] {
            assert!(bad.parse::<Publish>().is_err(), "{bad}");
        }
    }

    #[test]
    fn boot_times_come_from_the_console_markers() {
        let console = "[    0.0] Linux version\nclan-vm: initramfs at 1.50 s\nnoise\nclan-vm: switching to systemd at 2.25 s\n";
        let times = boot_times(console, 9.0);
        assert_eq!(times.kernel_s, Some(1.5));
        assert_eq!(times.initramfs_s, Some(0.75));
        assert_eq!(times.systemd_to_sshd_s, Some(6.75));
        assert_eq!(boot_times("", 3.0).kernel_s, None);
    }

    #[test]
    fn the_kernel_command_line_masks_units_and_carries_no_secret() {
        let args = kernel_args("web01", None);
        assert!(args.contains("clan.hostname=web01"));
        assert!(args.contains("systemd.mask=serial-getty@ttyS0.service"));
        assert!(!args.contains("clan.lan"));
        assert!(!args.contains("KEY"));
    }
}
