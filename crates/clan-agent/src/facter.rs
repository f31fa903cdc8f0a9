//! `clan agent facter`: the machine's hardware report in nixos-facter's format
//! ([`clan_facter::Report`]), collected from sysfs and procfs (no hwinfo): the CPU from
//! `/proc/cpuinfo`, memory from `/proc/meminfo`, disks from `/sys/class/block`, interfaces from
//! `/sys/class/net`, controllers from the PCI and virtio buses, drivers and their modules from
//! each device's `driver` links up its parents, virtualisation as systemd-detect-virt names it.
//!
//! What is missing (a container sees no disks, a VM on virtio-mmio has no PCI bus, `/sys`
//! may be absent altogether) is left out, never an error. Serial numbers, UUIDs, `by-id` /
//! `by-uuid` names and MAC addresses identify one piece of hardware and the file is committed:
//! they are written only when asked for.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use clan_facter::{Cpu, Device, Hardware, Id, Report, REPORT_VERSION};
use serde_json::{json, Map, Value};

/// What to collect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Also serial numbers, WWNs, UUID-bearing device names and MAC addresses.
    pub with_serials: bool,
}

/// The report of the system whose `/proc`, `/sys`, `/dev` and `/run` are under `root`.
pub fn collect(root: &Path, options: Options) -> Report {
    let sys = Sys {
        root: root.to_path_buf(),
        options,
    };
    let cpuinfo = sys.text("proc/cpuinfo").unwrap_or_default();
    let mut hardware = Hardware {
        cpu: cpus(&cpuinfo),
        memory: sys.memory().into_iter().collect(),
        disk: sys.disks(),
        network_interface: sys.interfaces(),
        ..Hardware::default()
    };
    for (class, device) in sys.controllers() {
        let list = match class {
            Class::Network => &mut hardware.network_controller,
            Class::Storage => &mut hardware.storage_controller,
            Class::Graphics => &mut hardware.graphics_card,
            Class::Usb => &mut hardware.usb_controller,
        };
        list.push(device);
    }
    Report {
        version: REPORT_VERSION,
        system: format!("{}-linux", std::env::consts::ARCH),
        virtualisation: Some(sys.virtualisation(&cpuinfo)),
        uefi: Some(sys.root.join("sys/firmware/efi").is_dir()),
        hardware,
        extra: Map::new(),
    }
}

/// The system being described, and what to leave out.
struct Sys {
    root: PathBuf,
    options: Options,
}

impl Sys {
    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn text(&self, relative: &str) -> Option<String> {
        read_trimmed(&self.path(relative))
    }

    /// The names in directory `relative`, sorted (none when it is missing).
    fn names(&self, relative: &str) -> Vec<String> {
        names(&self.path(relative))
    }

    /// `path` (under `root`) as hwinfo writes sysfs paths: relative to `/sys`, with a
    /// leading `/`, links resolved.
    fn sysfs_path(&self, path: &Path) -> Option<String> {
        let resolved = fs::canonicalize(path).ok()?;
        let sys = fs::canonicalize(self.path("sys")).ok()?;
        let inner = resolved.strip_prefix(&sys).ok()?;
        Some(format!("/{}", inner.display()))
    }

    /// systemd-detect-virt's answer: a container first (what the services on it live in),
    /// then a hypervisor, else `none`.
    fn virtualisation(&self, cpuinfo: &str) -> String {
        if let Some(container) = self.container() {
            return container;
        }
        let hypervisor = cpuinfo
            .lines()
            .find(|line| line.starts_with("flags"))
            .is_some_and(|flags| flags.split_whitespace().any(|flag| flag == "hypervisor"));
        let dmi = [
            "sys/class/dmi/id/sys_vendor",
            "sys/class/dmi/id/product_name",
            "sys/class/dmi/id/board_vendor",
            "sys/class/dmi/id/bios_vendor",
        ]
        .iter()
        .filter_map(|file| self.text(file))
        .collect::<Vec<_>>()
        .join("\n");
        const VENDORS: &[(&str, &str)] = &[
            ("KVM", "kvm"),
            ("OpenStack", "kvm"),
            ("KubeVirt", "kvm"),
            ("Amazon EC2", "amazon"),
            ("QEMU", "qemu"),
            ("VMware", "vmware"),
            ("VMW", "vmware"),
            ("innotek GmbH", "oracle"),
            ("VirtualBox", "oracle"),
            ("Xen", "xen"),
            ("Bochs", "bochs"),
            ("Parallels", "parallels"),
            ("BHYVE", "bhyve"),
            ("Hyper-V", "microsoft"),
            ("Google", "google"),
            ("Apple Virtualization", "apple"),
        ];
        if let Some((_, name)) = VENDORS.iter().find(|(vendor, _)| dmi.contains(vendor)) {
            return (*name).to_owned();
        }
        if dmi.contains("Microsoft Corporation") && dmi.contains("Virtual Machine") {
            return "microsoft".to_owned();
        }
        if self.text("sys/hypervisor/type").as_deref() == Some("xen") {
            return "xen".to_owned();
        }
        // No DMI (a microvm, some clouds): the CPU still says it runs under a hypervisor.
        if hypervisor {
            let virtio = !self.names("sys/bus/virtio/devices").is_empty();
            return if virtio { "kvm" } else { "vm-other" }.to_owned();
        }
        "none".to_owned()
    }

    fn container(&self) -> Option<String> {
        // systemd writes what its manager was told in `$container`; other managers leave marks.
        if let Some(name) = self.text("run/systemd/container").filter(|n| !n.is_empty()) {
            return Some(match name.as_str() {
                "oci" => "container-other".to_owned(),
                _ => name,
            });
        }
        if let Ok(environ) = fs::read(self.path("proc/1/environ")) {
            let value = environ
                .split(|byte| *byte == 0)
                .find_map(|entry| entry.strip_prefix(b"container="));
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                return Some(String::from_utf8_lossy(value).into_owned());
            }
        }
        if self.path(".dockerenv").exists() {
            return Some("docker".to_owned());
        }
        if self.path("run/.containerenv").exists() {
            return Some("podman".to_owned());
        }
        let wsl = self
            .text("proc/sys/kernel/osrelease")
            .is_some_and(|release| release.contains("Microsoft") || release.contains("WSL"));
        wsl.then(|| "wsl".to_owned())
    }

    /// Main memory, as hwinfo reports it: one device with the size in a `phys_mem` resource.
    fn memory(&self) -> Option<Device> {
        let meminfo = self.text("proc/meminfo")?;
        let kib: u64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(Device {
            class_list: vec!["memory".into()],
            base_class: Some(Id::number(0x0101, Some("Internally Used Class"))),
            sub_class: Some(Id::number(0x0002, Some("Main Memory"))),
            model: Some("Main Memory".into()),
            resources: vec![json!({"type": "phys_mem", "range": kib * 1024})],
            ..Device::default()
        })
    }

    /// Whole disks: block devices backed by a device (no partitions, loop, RAM or
    /// device-mapper devices).
    fn disks(&self) -> Vec<Device> {
        let mut disks = Vec::new();
        for name in self.names("sys/class/block") {
            let dir = self.path("sys/class/block").join(&name);
            let device = dir.join("device");
            if dir.join("partition").exists() || !device.exists() {
                continue;
            }
            let device_link = self.sysfs_path(&device);
            let drivers = self.drivers(&device);
            let mut unix_device_names = self.disk_links(&name);
            unix_device_names.push(format!("/dev/{name}"));
            unix_device_names.sort();
            let mut resources = Vec::new();
            if let Some(sectors) = read_number(&dir.join("size")) {
                resources.push(
                    json!({"type": "size", "unit": "sectors", "value_1": sectors, "value_2": 512}),
                );
            }
            let mut extra = Map::new();
            if let Some(number) = block_device_number(&dir) {
                extra.insert("unix_device_number".into(), number);
            }
            if self.options.with_serials {
                let serial = read_trimmed(&dir.join("serial"))
                    .or_else(|| read_trimmed(&device.join("serial")))
                    .or_else(|| read_trimmed(&device.join("wwid")));
                if let Some(serial) = serial.filter(|s| !s.is_empty()) {
                    extra.insert("serial".into(), Value::String(serial));
                }
            }
            let model = read_trimmed(&device.join("model")).filter(|m| !m.is_empty());
            // SCSI and ATA disks name their vendor; virtio's `vendor` is a PCI id.
            let vendor = read_trimmed(&device.join("vendor"))
                .filter(|v| !v.is_empty() && !v.starts_with("0x"));
            disks.push(
                drivers.fill(Device {
                    class_list: vec!["disk".into(), "block_device".into()],
                    base_class: Some(Id::number(0x0106, Some("Mass Storage Device"))),
                    sub_class: Some(Id::number(0x0000, Some("Disk"))),
                    vendor: vendor.map(Id::Named),
                    model: Some(model.unwrap_or_else(|| "Disk".into())),
                    sysfs_id: Some(format!("/class/block/{name}")),
                    sysfs_bus_id: device_link
                        .as_deref()
                        .and_then(|link| link.rsplit('/').next())
                        .map(str::to_owned),
                    sysfs_device_link: device_link,
                    unix_device_name: Some(format!("/dev/{name}")),
                    unix_device_names,
                    resources,
                    extra,
                    ..Device::default()
                }),
            );
        }
        disks
    }

    /// `/dev/disk/by-*/…` links to block device `name`; the kinds that carry a serial number
    /// or a UUID only when asked for.
    fn disk_links(&self, name: &str) -> Vec<String> {
        let private = ["by-id", "by-uuid", "by-partuuid", "by-wwn"];
        let mut links = Vec::new();
        for kind in self.names("dev/disk") {
            if private.contains(&kind.as_str()) && !self.options.with_serials {
                continue;
            }
            let dir = self.path("dev/disk").join(&kind);
            for link in names(&dir) {
                let target = fs::read_link(dir.join(&link)).ok();
                if target.is_some_and(|t| t.file_name().is_some_and(|f| f == name)) {
                    links.push(format!("/dev/disk/{kind}/{link}"));
                }
            }
        }
        links
    }

    fn interfaces(&self) -> Vec<Device> {
        let mut interfaces = Vec::new();
        for name in self.names("sys/class/net") {
            let dir = self.path("sys/class/net").join(&name);
            let device = dir.join("device");
            let (sub_class, model) = if dir.join("wireless").exists() {
                (Id::number(0x000a, Some("WLAN")), "WLAN network interface")
            } else {
                match read_number(&dir.join("type")) {
                    Some(772) => (
                        Id::number(0, Some("Loopback")),
                        "Loopback network interface",
                    ),
                    Some(1) => (
                        Id::number(1, Some("Ethernet")),
                        "Ethernet network interface",
                    ),
                    _ => (
                        Id::number(0x80, Some("Network Interface")),
                        "Network Interface",
                    ),
                }
            };
            let drivers = self.drivers(&device);
            let mut resources = Vec::new();
            if self.options.with_serials {
                if let Some(address) = read_trimmed(&dir.join("address")).filter(|a| !a.is_empty())
                {
                    resources.push(json!({"type": "hwaddr", "address": address}));
                }
            }
            interfaces.push(drivers.fill(Device {
                class_list: vec!["network_interface".into()],
                base_class: Some(Id::number(0x0107, Some("Network Interface"))),
                sub_class: Some(sub_class),
                model: Some(model.into()),
                sysfs_id: Some(format!("/class/net/{name}")),
                sysfs_device_link: device.exists().then(|| self.sysfs_path(&device)).flatten(),
                unix_device_name: Some(name.clone()),
                unix_device_names: vec![name],
                resources,
                ..Device::default()
            }));
        }
        interfaces
    }

    /// Network, storage, graphics and USB controllers on the PCI bus, and virtio devices
    /// (virtio-pci's own PCI functions are described by the virtio device they carry).
    fn controllers(&self) -> Vec<(Class, Device)> {
        let mut found = Vec::new();
        for address in self.names("sys/bus/pci/devices") {
            let dir = self.path("sys/bus/pci/devices").join(&address);
            let Some(code) = read_number(&dir.join("class")) else {
                continue;
            };
            let (base, sub, interface) = ((code >> 16) & 0xff, (code >> 8) & 0xff, code & 0xff);
            let Some(class) = Class::of_pci(base, sub) else {
                continue;
            };
            let drivers = self.drivers(&dir);
            let virtio = drivers
                .nearest
                .as_ref()
                .is_some_and(|(name, _)| name == "virtio-pci");
            if virtio {
                continue;
            }
            let id = |file: &str| read_number(&dir.join(file)).map(|value| Id::number(value, None));
            let slot = address
                .split(':')
                .nth(1)
                .zip(address.split(':').nth(2))
                .and_then(|(bus, rest)| {
                    let bus = u64::from_str_radix(bus, 16).ok()?;
                    let number = u64::from_str_radix(rest.split('.').next()?, 16).ok()?;
                    Some(json!({"bus": bus, "number": number}))
                });
            let mut extra = Map::new();
            if let Some(slot) = slot {
                extra.insert("slot".into(), slot);
            }
            found.push((
                class,
                drivers.fill(Device {
                    class_list: vec![class.name().into(), "pci".into()],
                    bus_type: Some(Id::number(4, Some("PCI"))),
                    base_class: Some(Id::number(base, pci_base_name(base))),
                    sub_class: Some(Id::number(sub, pci_sub_name(base, sub))),
                    pci_interface: Some(Id::number(interface, None)),
                    vendor: id("vendor"),
                    sub_vendor: id("subsystem_vendor"),
                    device: id("device"),
                    sub_device: id("subsystem_device"),
                    revision: id("revision"),
                    model: pci_base_name(base).map(str::to_owned),
                    sysfs_id: self.sysfs_path(&dir),
                    sysfs_bus_id: Some(address.clone()),
                    unix_device_names: self.net_names_of(&dir),
                    module_alias: read_trimmed(&dir.join("modalias")),
                    extra,
                    ..Device::default()
                }),
            ));
        }
        for name in self.names("sys/bus/virtio/devices") {
            let dir = self.path("sys/bus/virtio/devices").join(&name);
            let Some(kind) = read_number(&dir.join("device")) else {
                continue;
            };
            let (class, what) = match kind {
                1 => (Class::Network, "Ethernet Card"),
                2 => (Class::Storage, "Storage"),
                8 => (Class::Storage, "SCSI"),
                16 => (Class::Graphics, "GPU"),
                _ => continue,
            };
            let drivers = self.drivers(&dir);
            let unix_device_names = self.net_names_of(&dir);
            found.push((
                class,
                drivers.fill(Device {
                    class_list: vec![class.name().into()],
                    bus_type: Some(Id::number(0x8f, Some("Virtio"))),
                    base_class: Some(Id::number(class.base(), pci_base_name(class.base()))),
                    vendor: Some(Id::Named("Virtio".into())),
                    device: Some(Id::Named(what.into())),
                    model: Some(format!("Virtio {what}")),
                    sysfs_id: self.sysfs_path(&dir),
                    sysfs_bus_id: Some(name.clone()),
                    unix_device_name: unix_device_names.first().cloned(),
                    unix_device_names,
                    module_alias: read_trimmed(&dir.join("modalias")),
                    ..Device::default()
                }),
            ));
        }
        found
    }

    /// The interfaces a network device carries (`<device>/net/<name>`).
    fn net_names_of(&self, device: &Path) -> Vec<String> {
        names(&device.join("net"))
    }

    /// The kernel module of `driver` (a directory under `/sys/bus/*/drivers`): its `module`
    /// link, else the module of the same name a built-in driver shows in `/sys/module`
    /// (hwinfo lists those too, from the module aliases).
    fn module_of(&self, driver: &Path) -> Option<String> {
        if let Some(module) = fs::canonicalize(driver.join("module"))
            .ok()
            .as_deref()
            .and_then(Path::file_name)
        {
            return Some(module.to_string_lossy().into_owned());
        }
        let name = driver.file_name()?.to_string_lossy().replace('-', "_");
        self.path("sys/module").join(&name).is_dir().then_some(name)
    }

    /// The drivers bound to `device` and to each of its parents, and their modules.
    fn drivers(&self, device: &Path) -> Drivers {
        let mut drivers = Drivers::default();
        let Ok(mut dir) = fs::canonicalize(device) else {
            return drivers;
        };
        let devices = fs::canonicalize(self.path("sys/devices")).ok();
        while devices
            .as_ref()
            .is_some_and(|root| dir.starts_with(root) && &dir != root)
        {
            if let Ok(driver) = fs::canonicalize(dir.join("driver")) {
                let name = driver.file_name().map(|n| n.to_string_lossy().into_owned());
                let module = self.module_of(&driver);
                if drivers.nearest.is_none() {
                    drivers.nearest = name.clone().map(|name| (name, module.clone()));
                }
                drivers.names.extend(name);
                drivers.modules.extend(module);
            }
            if !dir.pop() {
                break;
            }
        }
        drivers
    }
}

/// The drivers of a device and of the buses it hangs on.
#[derive(Default)]
struct Drivers {
    /// The device's own driver (or its nearest parent's) and that driver's module.
    nearest: Option<(String, Option<String>)>,
    names: BTreeSet<String>,
    /// What an initrd must load for the device (built-in drivers included, as hwinfo does).
    modules: BTreeSet<String>,
}

impl Drivers {
    /// `device` with hwinfo's four driver fields filled in (lists sorted, as hwinfo writes them).
    fn fill(self, device: Device) -> Device {
        let (driver, driver_module) = match self.nearest {
            Some((driver, module)) => (Some(driver), module),
            None => (None, None),
        };
        Device {
            driver,
            driver_module,
            drivers: self.names.into_iter().collect(),
            driver_modules: self.modules.into_iter().collect(),
            ..device
        }
    }
}

/// The controller classes a report lists.
#[derive(Debug, Clone, Copy)]
enum Class {
    Network,
    Storage,
    Graphics,
    Usb,
}

impl Class {
    /// The class of a PCI function with class code `base`/`sub`.
    fn of_pci(base: u64, sub: u64) -> Option<Class> {
        match (base, sub) {
            (0x01, _) => Some(Class::Storage),
            (0x02, _) => Some(Class::Network),
            (0x03, _) => Some(Class::Graphics),
            (0x0c, 0x03) => Some(Class::Usb),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Class::Network => "network_controller",
            Class::Storage => "storage_controller",
            Class::Graphics => "graphics_card",
            Class::Usb => "usb_controller",
        }
    }

    /// The PCI base class of the class.
    fn base(self) -> u64 {
        match self {
            Class::Storage => 0x01,
            Class::Network => 0x02,
            Class::Graphics => 0x03,
            Class::Usb => 0x0c,
        }
    }
}

fn pci_base_name(base: u64) -> Option<&'static str> {
    match base {
        0x01 => Some("Mass storage controller"),
        0x02 => Some("Network controller"),
        0x03 => Some("Display controller"),
        0x0c => Some("Serial bus controller"),
        _ => None,
    }
}

fn pci_sub_name(base: u64, sub: u64) -> Option<&'static str> {
    match (base, sub) {
        (0x01, 0x01) => Some("IDE interface"),
        (0x01, 0x04) => Some("RAID bus controller"),
        (0x01, 0x06) => Some("SATA controller"),
        (0x01, 0x07) => Some("Serial Attached SCSI controller"),
        (0x01, 0x08) => Some("Non-Volatile memory controller"),
        (0x02, 0x00) => Some("Ethernet controller"),
        (0x02, 0x80) => Some("Network controller"),
        (0x03, 0x00) => Some("VGA compatible controller"),
        (0x03, 0x02) => Some("3D controller"),
        (0x0c, 0x03) => Some("USB Controller"),
        _ => None,
    }
}

/// One entry per physical package (`physical id`), as nixos-facter reports CPUs; a
/// `/proc/cpuinfo` without `physical id` (most ARM kernels) is one package.
fn cpus(cpuinfo: &str) -> Vec<Cpu> {
    let mut packages: Vec<Cpu> = Vec::new();
    for block in cpuinfo.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let field = |key: &str| {
            block.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                (name.trim() == key).then(|| value.trim().to_owned())
            })
        };
        let number = |key: &str| field(key).and_then(|value| parse_number(&value));
        let physical_id = number("physical id").unwrap_or(0);
        if packages
            .iter()
            .any(|cpu| cpu.physical_id == Some(physical_id))
        {
            continue;
        }
        // Processor blocks of other architectures (the trailing `Hardware` block of 32-bit ARM).
        if field("processor").is_none() {
            continue;
        }
        let words = |key: &str| -> Vec<String> {
            field(key)
                .map(|value| value.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let mut extra = Map::new();
        if let Some(bogo) = field("bogomips")
            .or_else(|| field("BogoMIPS"))
            .and_then(|value| value.parse::<f64>().ok())
        {
            extra.insert("bogo".into(), json!(bogo));
        }
        if let Some(cache) =
            field("cache size").and_then(|v| parse_number(v.trim_end_matches("KB").trim()))
        {
            extra.insert("cache".into(), json!(cache));
        }
        for (key, name) in [
            ("fpu", "fpu"),
            ("fpu_exception", "fpu_exception"),
            ("wp", "write_protect"),
        ] {
            if let Some(value) = field(key) {
                extra.insert(name.into(), json!(value == "yes"));
            }
        }
        for (key, name) in [
            ("cpuid level", "cpuid_level"),
            ("clflush size", "clflush_size"),
            ("cache_alignment", "cache_alignment"),
        ] {
            if let Some(value) = number(key) {
                extra.insert(name.into(), json!(value));
            }
        }
        if let Some(sizes) = field("address sizes") {
            // `46 bits physical, 48 bits virtual`
            let bits = |kind: &str| {
                sizes.split(',').find_map(|part| {
                    let part = part.trim();
                    part.ends_with(kind)
                        .then(|| part.split_whitespace().next()?.parse::<u64>().ok())
                        .flatten()
                })
            };
            if let (Some(physical), Some(virtual_)) = (bits("physical"), bits("virtual")) {
                extra.insert(
                    "address_sizes".into(),
                    json!({"physical": physical, "virtual": virtual_}),
                );
            }
        }
        let mut features = words("flags");
        if features.is_empty() {
            features = words("Features");
        }
        let siblings = number("siblings").or_else(|| {
            // Without `siblings` every processor block is one logical CPU of the one package.
            Some(
                cpuinfo.matches("\nprocessor").count() as u64
                    + u64::from(cpuinfo.starts_with("processor")),
            )
        });
        packages.push(Cpu {
            architecture: Some(std::env::consts::ARCH.to_owned()),
            vendor_name: field("vendor_id").or_else(|| field("CPU implementer")),
            model_name: field("model name"),
            family: number("cpu family"),
            model: number("model"),
            stepping: number("stepping"),
            features,
            bugs: words("bugs"),
            physical_id: Some(physical_id),
            siblings,
            cores: number("cpu cores"),
            extra,
        });
    }
    packages.sort_by_key(|cpu| cpu.physical_id);
    packages
}

/// `0x1af4`, `25`: sysfs and cpuinfo write numbers both ways.
fn parse_number(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
}

fn read_number(path: &Path) -> Option<u64> {
    parse_number(&read_trimmed(path)?)
}

/// The names in `dir`, sorted; none when it is missing or unreadable.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Block device `dir`'s number as hwinfo writes it: its `dev` file (`254:0`) and the minor
/// numbers it spans (`range`: the partitions it can have, and itself).
fn block_device_number(dir: &Path) -> Option<Value> {
    let text = read_trimmed(&dir.join("dev"))?;
    let (major, minor) = text.split_once(':')?;
    Some(json!({
        "type": u32::from(b'b'),
        "major": major.parse::<u64>().ok()?,
        "minor": minor.parse::<u64>().ok()?,
        "range": read_number(&dir.join("range")).unwrap_or(1),
    }))
}

#[cfg(test)]
mod tests;
