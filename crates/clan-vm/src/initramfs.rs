//! The small initramfs every VM boots with, written here as a `newc` cpio archive: a static
//! busybox, the few kernel modules needed to see the root disk and the network (Debian's
//! kernel has them as modules), the per-VM seed (hostname is on the command line; the host
//! key and the admin's authorized key are here, never on the command line, which every guest
//! process can read) and `/init`, which mounts the root disk, writes the seed into it and
//! hands over to systemd. Debian's own 30 MB initramfs costs seconds under TCG; this one is
//! about 2 MB.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Modules the initramfs loads, with their dependencies first: the virtio-mmio transport of
/// QEMU's microvm machine, the block device of the root disk, the network card (configured
/// before systemd starts, so no network manager is needed in the guest) and the entropy
/// source (sshd and systemd wait for the random pool).
pub const MODULES: &[&str] = &["virtio_mmio", "virtio_blk", "virtio_net", "virtio_rng"];

/// The script the kernel runs first. Prints `clan-vm:` markers with the uptime so the boot
/// can be measured from the console log.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /newroot /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "clan-vm: initramfs at $(cut -d' ' -f1 /proc/uptime) s" > /dev/console
while read -r module; do insmod "/lib/modules/$module" || echo "clan-vm: insmod $module failed" > /dev/console; done < /modules
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
if ! mount -t ext4 -o rw,noatime /dev/vda /newroot; then echo "clan-vm: cannot mount the root disk /dev/vda" > /dev/console; sleep 1; poweroff -f; fi
for word in $(cat /proc/cmdline); do
  case "$word" in
    clan.hostname=*) hostname="${word#clan.hostname=}" ;;
    clan.lan=*) lan="${word#clan.lan=}" ;;
  esac
done
echo "$hostname" > /newroot/etc/hostname
mkdir -p -m 0700 /newroot/root/.ssh
cat /seed/authorized_keys > /newroot/root/.ssh/authorized_keys
chmod 0600 /newroot/root/.ssh/authorized_keys
# The first boot's host key; a deploy replaces it with the clan's own, kept from then on.
if [ ! -e /newroot/etc/ssh/ssh_host_ed25519_key ]; then
  cp /seed/ssh_host_ed25519_key /seed/ssh_host_ed25519_key.pub /newroot/etc/ssh/
  chmod 0600 /newroot/etc/ssh/ssh_host_ed25519_key
fi
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
if [ -n "$lan" ]; then ip link set eth1 up; ip addr add "$lan" dev eth1; fi
sync
echo "clan-vm: switching to systemd at $(cut -d' ' -f1 /proc/uptime) s" > /dev/console
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
"#;

/// The per-VM files `/init` writes into the root disk.
pub struct Seed<'a> {
    /// OpenSSH private host key (the first boot's).
    pub host_key: &'a [u8],
    pub host_key_pub: &'a [u8],
    /// The runner's client key, authorized for root.
    pub authorized_keys: &'a [u8],
}

/// The kernel version installed in `root` (the one directory under `lib/modules`) and its
/// `vmlinuz`.
pub fn kernel(root: &Path) -> Result<(String, PathBuf)> {
    let modules = root.join("lib/modules");
    let mut versions: Vec<String> = fs::read_dir(&modules)
        .map_err(clan_error::io("list", &modules))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    versions.sort();
    let version = versions.pop().ok_or_else(|| Error::BadRootFilesystem {
        root: root.to_owned(),
        what: "has no kernel in lib/modules".into(),
    })?;
    let vmlinuz = root.join(format!("boot/vmlinuz-{version}"));
    if !vmlinuz.is_file() {
        return Err(Error::BadRootFilesystem {
            root: root.to_owned(),
            what: format!("has no boot/vmlinuz-{version}"),
        });
    }
    Ok((version, vmlinuz))
}

/// The module files (relative to `lib/modules/<version>`) to load for `wanted`, each after
/// the modules it depends on, per `modules.dep`; modules built into the kernel are skipped.
pub fn load_order(
    modules_dep: &str,
    builtin: &str,
    wanted: &[&str],
) -> Result<Vec<String>, String> {
    let deps: std::collections::HashMap<&str, Vec<&str>> = modules_dep
        .lines()
        .filter_map(|line| {
            let (module, deps) = line.split_once(':')?;
            Some((module.trim(), deps.split_whitespace().collect()))
        })
        .collect();
    let by_name = |name: &str| {
        let file = format!("{}.ko", name.replace('-', "_"));
        deps.keys()
            .find(|path| path.rsplit('/').next().map(|f| f.replace('-', "_")) == Some(file.clone()))
            .copied()
    };
    let is_builtin = |name: &str| {
        let file = format!("/{name}.ko");
        builtin.lines().any(|line| line.ends_with(&file))
    };
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit<'a>(
        module: &'a str,
        deps: &std::collections::HashMap<&'a str, Vec<&'a str>>,
        seen: &mut BTreeSet<&'a str>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(module) {
            return;
        }
        // modules.dep lists a module's dependencies with the deepest last: load from the end.
        for dep in deps.get(module).into_iter().flatten().rev() {
            visit(dep, deps, seen, order);
        }
        order.push(module.to_owned());
    }
    for name in wanted {
        match by_name(name) {
            Some(path) => visit(path, &deps, &mut seen, &mut order),
            None if is_builtin(name) => {}
            None => return Err(format!("has no kernel module `{name}`")),
        }
    }
    Ok(order)
}

/// The whole initramfs for a VM booting `root`'s kernel `version`, with `seed`.
pub fn build(root: &Path, version: &str, seed: &Seed<'_>) -> Result<Vec<u8>> {
    let bad = |what: String| Error::BadRootFilesystem {
        root: root.to_owned(),
        what,
    };
    let module_dir = root.join("lib/modules").join(version);
    let read = |name: &str| {
        let path = module_dir.join(name);
        fs::read_to_string(&path).map_err(clan_error::io("read", &path))
    };
    let order =
        load_order(&read("modules.dep")?, &read("modules.builtin")?, MODULES).map_err(bad)?;
    let busybox_path = root.join("bin/busybox");
    let busybox =
        fs::read(&busybox_path).map_err(|_| bad("has no bin/busybox (busybox-static)".into()))?;

    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "seed", "lib", "lib/modules"] {
        cpio.dir(dir, 0o755);
    }
    cpio.char_device("dev/console", 0o600, 5, 1);
    cpio.file("bin/busybox", 0o755, &busybox);
    cpio.file("init", 0o755, INIT.as_bytes());
    let mut dirs = BTreeSet::new();
    for module in &order {
        let mut parent = Path::new(module).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_owned());
            parent = dir.parent();
        }
    }
    for dir in &dirs {
        cpio.dir(&format!("lib/modules/{}", dir.display()), 0o755);
    }
    for module in &order {
        let path = module_dir.join(module);
        let content = fs::read(&path).map_err(clan_error::io("read", &path))?;
        cpio.file(&format!("lib/modules/{module}"), 0o644, &content);
    }
    cpio.file("modules", 0o644, (order.join("\n") + "\n").as_bytes());
    cpio.file("seed/ssh_host_ed25519_key", 0o600, seed.host_key);
    cpio.file("seed/ssh_host_ed25519_key.pub", 0o644, seed.host_key_pub);
    cpio.file("seed/authorized_keys", 0o600, seed.authorized_keys);
    Ok(cpio.finish())
}

/// A `newc` cpio archive, as the kernel unpacks an initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.inode += 1;
        let namesize = name.len() + 1;
        let fields = [
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            u32::try_from(data.len()).unwrap_or(u32::MAX),
            0,
            0,
            rdev.0,
            rdev.1,
            u32::try_from(namesize).unwrap_or(u32::MAX),
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str, mode: u32) {
        self.entry(name, 0o040_000 | mode, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | mode, (0, 0), data);
    }

    fn char_device(&mut self, name: &str, mode: u32, major: u32, minor: u32) {
        self.entry(name, 0o020_000 | mode, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_order_puts_dependencies_first_and_skips_builtins() {
        let dep = "kernel/drivers/virtio/virtio.ko:\n\
                   kernel/drivers/virtio/virtio_ring.ko:\n\
                   kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
                   kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n";
        let builtin = "kernel/fs/ext4/ext4.ko\n";
        let order = load_order(dep, builtin, &["virtio_mmio", "virtio_blk", "ext4"]).unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio_mmio.ko",
                "kernel/drivers/block/virtio_blk.ko",
            ]
        );
        assert!(load_order(dep, builtin, &["virtio_net"])
            .unwrap_err()
            .contains("virtio_net"));
    }

    #[test]
    fn cpio_entries_are_aligned_and_end_with_the_trailer() {
        let mut cpio = Cpio::default();
        cpio.file("init", 0o755, b"abc");
        let out = cpio.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("init\0"));
        assert!(text.contains("TRAILER!!!\0"));
        // The first header's file size field (the 7th) is 3.
        assert_eq!(&out[6 + 6 * 8..6 + 7 * 8], b"00000003");
    }
}
