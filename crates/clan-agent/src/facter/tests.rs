//! The collector over small hand-made `/sys` and `/proc` trees.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::*;

const CPUINFO: &str = "processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R) Gold 6130
stepping\t: 4
cache size\t: 22528 KB
physical id\t: 0
siblings\t: 2
cpu cores\t: 2
fpu\t\t: yes
flags\t\t: fpu vme sse2 ht
bugs\t\t: spectre_v1
bogomips\t: 4200.00
address sizes\t: 46 bits physical, 48 bits virtual

processor\t: 1
vendor_id\t: GenuineIntel
physical id\t: 0
siblings\t: 2

";

fn write(root: &Path, path: &str, content: &str) {
    let path = root.join(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn link(root: &Path, path: &str, target: &str) {
    let path = root.join(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    symlink(target, path).unwrap();
}

/// PCI function `address` of class `class`, vendor and device ids, bound to `driver`
/// (a loadable module of the same name) when given.
fn pci(root: &Path, address: &str, class: &str, ids: (&str, &str), driver: Option<&str>) {
    let dir = format!("sys/devices/pci0000:00/{address}");
    write(root, &format!("{dir}/class"), class);
    write(root, &format!("{dir}/vendor"), ids.0);
    write(root, &format!("{dir}/device"), ids.1);
    link(
        root,
        &format!("sys/bus/pci/devices/{address}"),
        &format!("../../../devices/pci0000:00/{address}"),
    );
    if let Some(driver) = driver {
        module_driver(root, &dir, "pci", driver, driver);
    }
}

/// Binds the device at `dir` to `bus`'s driver `driver`, which is module `module`.
fn module_driver(root: &Path, dir: &str, bus: &str, driver: &str, module: &str) {
    let up = "../".repeat(dir.matches('/').count());
    link(
        root,
        &format!("{dir}/driver"),
        &format!("{up}bus/{bus}/drivers/{driver}"),
    );
    let module_link = format!("sys/bus/{bus}/drivers/{driver}/module");
    // A driver bound to several devices is linked to its module once.
    if root.join(&module_link).symlink_metadata().is_err() {
        link(root, &module_link, &format!("../../../../module/{module}"));
    }
    fs::create_dir_all(root.join("sys/module").join(module)).unwrap();
}

/// A bare-metal machine with one SATA disk behind AHCI, one e1000e NIC, a USB controller and
/// a host bridge, laid out as the kernel lays out sysfs (class entries are links into
/// /sys/devices).
fn bare_metal(root: &Path) {
    write(root, "proc/cpuinfo", CPUINFO);
    write(
        root,
        "proc/meminfo",
        "MemTotal:       16314472 kB\nMemFree: 1 kB\n",
    );
    fs::create_dir_all(root.join("sys/firmware/efi")).unwrap();
    pci(
        root,
        "0000:00:17.0",
        "0x010601\n",
        ("0x8086\n", "0xa352\n"),
        Some("ahci"),
    );
    let sata = "sys/devices/pci0000:00/0000:00:17.0";
    write(
        root,
        &format!("{sata}/modalias"),
        "pci:v00008086d0000A352\n",
    );
    let disk = format!("{sata}/ata1/host0/target0:0:0/0:0:0:0");
    write(root, &format!("{disk}/model"), "Samsung SSD 860\n");
    write(root, &format!("{disk}/wwid"), "naa.5002538e40a1b2c3\n");
    module_driver(root, &disk, "scsi", "sd", "sd_mod");
    let block = format!("{disk}/block/sda");
    write(root, &format!("{block}/size"), "1953525168\n");
    write(root, &format!("{block}/dev"), "8:0\n");
    write(root, &format!("{block}/range"), "16\n");
    link(root, &format!("{block}/device"), "../../../0:0:0:0");
    write(root, &format!("{block}/sda1/partition"), "1\n");
    let class_link = format!("../../{}", block.trim_start_matches("sys/"));
    link(root, "sys/class/block/sda", &class_link);
    link(root, "sys/class/block/sda1", &format!("{class_link}/sda1"));
    // A loop device has no `device`: not a disk.
    fs::create_dir_all(root.join("sys/devices/virtual/block/loop0")).unwrap();
    link(
        root,
        "sys/class/block/loop0",
        "../../devices/virtual/block/loop0",
    );
    link(
        root,
        "dev/disk/by-id/ata-Samsung_SSD_860_S3Z9NB0K123456",
        "../../sda",
    );
    link(root, "dev/disk/by-path/pci-0000:00:17.0-ata-1", "../../sda");

    pci(
        root,
        "0000:00:1f.6",
        "0x020000\n",
        ("0x8086\n", "0x15bc\n"),
        Some("e1000e"),
    );
    let nic = "sys/devices/pci0000:00/0000:00:1f.6";
    write(root, &format!("{nic}/net/eno1/type"), "1\n");
    write(
        root,
        &format!("{nic}/net/eno1/address"),
        "3c:7c:3f:01:02:03\n",
    );
    link(
        root,
        &format!("{nic}/net/eno1/device"),
        "../../../0000:00:1f.6",
    );
    link(
        root,
        "sys/class/net/eno1",
        "../../devices/pci0000:00/0000:00:1f.6/net/eno1",
    );
    write(root, "sys/devices/virtual/net/lo/type", "772\n");
    link(root, "sys/class/net/lo", "../../devices/virtual/net/lo");

    pci(
        root,
        "0000:00:14.0",
        "0x0c0330\n",
        ("0x8086\n", "0xa36d\n"),
        None,
    );
    // A host bridge is in none of the lists.
    pci(
        root,
        "0000:00:00.0",
        "0x060000\n",
        ("0x8086\n", "0x3e0f\n"),
        None,
    );
}

#[test]
fn a_bare_metal_machine_is_described_as_nixos_facter_does() {
    let root = tempfile::tempdir().unwrap();
    bare_metal(root.path());
    let report = collect(root.path(), Options::default());
    assert_eq!(report.virtualisation.as_deref(), Some("none"));
    assert_eq!(report.uefi, Some(true));
    assert_eq!(report.system, format!("{}-linux", std::env::consts::ARCH));

    let cpu = &report.hardware.cpu;
    assert_eq!(cpu.len(), 1, "one entry per physical package");
    assert_eq!(cpu[0].vendor_name.as_deref(), Some("GenuineIntel"));
    assert_eq!(
        (cpu[0].family, cpu[0].model, cpu[0].stepping),
        (Some(6), Some(85), Some(4))
    );
    assert_eq!(cpu[0].features, ["fpu", "vme", "sse2", "ht"]);
    assert_eq!(
        cpu[0].extra["address_sizes"],
        json!({"physical": 46, "virtual": 48})
    );

    let facts = report.facts();
    assert!(facts.bare_metal);
    assert_eq!(facts.memory_bytes, Some(16314472 * 1024));

    let disks = &report.hardware.disk;
    assert_eq!(disks.len(), 1, "{disks:#?}");
    let sda = &disks[0];
    assert_eq!(sda.sysfs_id.as_deref(), Some("/class/block/sda"));
    assert_eq!(sda.unix_device_name.as_deref(), Some("/dev/sda"));
    assert_eq!(
        sda.sysfs_device_link.as_deref(),
        Some("/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0")
    );
    assert_eq!(sda.model.as_deref(), Some("Samsung SSD 860"));
    assert_eq!(sda.drivers, ["ahci", "sd"]);
    assert_eq!(
        (sda.driver.as_deref(), sda.driver_module.as_deref()),
        (Some("sd"), Some("sd_mod"))
    );
    assert_eq!(sda.driver_modules, ["ahci", "sd_mod"]);
    assert_eq!(facts.disks[0].size_bytes, Some(1953525168 * 512));
    assert_eq!(
        sda.unix_device_names,
        ["/dev/disk/by-path/pci-0000:00:17.0-ata-1", "/dev/sda"],
        "by-id names carry the serial number"
    );
    assert!(!sda.extra.contains_key("serial"));
    assert_eq!(
        sda.extra["unix_device_number"],
        json!({"type": 98, "major": 8, "minor": 0, "range": 16})
    );

    let names: Vec<_> = facts
        .network_interfaces
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(names, ["eno1", "lo"]);
    let eno1 = &report.hardware.network_interface[0];
    assert_eq!(eno1.driver_modules, ["e1000e"]);
    assert!(eno1.resources.is_empty(), "no MAC address unless asked");

    let controller = &report.hardware.network_controller[0];
    assert_eq!(controller.vendor.as_ref().and_then(Id::value), Some(0x8086));
    assert_eq!(controller.device.as_ref().and_then(Id::value), Some(0x15bc));
    assert_eq!(controller.sysfs_bus_id.as_deref(), Some("0000:00:1f.6"));
    assert_eq!(controller.unix_device_names, ["eno1"]);
    assert_eq!(controller.class_list, ["network_controller", "pci"]);
    let storage = &report.hardware.storage_controller[0];
    assert_eq!(storage.driver_modules, ["ahci"]);
    assert_eq!(
        storage.module_alias.as_deref(),
        Some("pci:v00008086d0000A352")
    );
    assert_eq!(report.hardware.usb_controller.len(), 1);
    assert!(report.hardware.graphics_card.is_empty());
}

#[test]
fn serials_and_addresses_are_written_only_when_asked_for() {
    let root = tempfile::tempdir().unwrap();
    bare_metal(root.path());
    let report = collect(root.path(), Options { with_serials: true });
    let sda = &report.hardware.disk[0];
    assert_eq!(sda.extra["serial"], "naa.5002538e40a1b2c3");
    assert!(sda
        .unix_device_names
        .contains(&"/dev/disk/by-id/ata-Samsung_SSD_860_S3Z9NB0K123456".to_owned()));
    assert_eq!(
        report.hardware.network_interface[0].resources,
        [json!({"type": "hwaddr", "address": "3c:7c:3f:01:02:03"})]
    );
    let plain = collect(root.path(), Options::default()).to_file();
    assert!(
        !plain.contains("S3Z9NB0K") && !plain.contains("3c:7c:3f"),
        "{plain}"
    );
}

#[test]
fn a_container_is_named_by_its_manager_whatever_the_cpu_says() {
    let root = tempfile::tempdir().unwrap();
    write(
        root.path(),
        "proc/cpuinfo",
        &CPUINFO.replace("flags\t\t: fpu", "flags\t\t: hypervisor fpu"),
    );
    write(root.path(), "run/systemd/container", "systemd-nspawn\n");
    assert_eq!(
        collect(root.path(), Options::default())
            .virtualisation
            .as_deref(),
        Some("systemd-nspawn")
    );
    fs::remove_file(root.path().join("run/systemd/container")).unwrap();
    write(root.path(), "sys/class/dmi/id/sys_vendor", "QEMU\n");
    assert_eq!(
        collect(root.path(), Options::default())
            .virtualisation
            .as_deref(),
        Some("qemu")
    );
    fs::remove_file(root.path().join("sys/class/dmi/id/sys_vendor")).unwrap();
    // A microvm: no DMI, virtio devices, the CPU flag.
    fs::create_dir_all(root.path().join("sys/bus/virtio/devices/virtio0")).unwrap();
    assert_eq!(
        collect(root.path(), Options::default())
            .virtualisation
            .as_deref(),
        Some("kvm")
    );
}

/// A container or a stripped VM may lack /sys, /proc or both: the report says less, and
/// still is one.
#[test]
fn nothing_to_read_is_an_empty_report_not_an_error() {
    let root = tempfile::tempdir().unwrap();
    let report = collect(root.path(), Options::default());
    assert_eq!(report.virtualisation.as_deref(), Some("none"));
    assert_eq!(report.uefi, Some(false));
    assert_eq!(report.hardware, Hardware::default());
    let text = report.to_file();
    assert_eq!(
        clan_facter::Report::parse("facter.json", &text).unwrap(),
        report
    );
}

/// A microvm (QEMU `-M microvm`): no PCI bus, no DMI, virtio devices on virtio-mmio.
#[test]
fn a_microvm_is_described_from_its_virtio_devices() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let cpuinfo = CPUINFO.replace("flags\t\t: fpu", "flags\t\t: hypervisor fpu");
    write(root, "proc/cpuinfo", &cpuinfo);
    for (index, kind, driver, interface) in [
        (0, "0x0002", "virtio_blk", None),
        (1, "0x0001", "virtio_net", Some("eth0")),
    ] {
        let transport = format!("sys/devices/platform/virtio-mmio.{index}");
        module_driver(root, &transport, "platform", "virtio-mmio", "virtio_mmio");
        let dir = format!("{transport}/virtio{index}");
        write(root, &format!("{dir}/device"), kind);
        module_driver(root, &dir, "virtio", driver, driver);
        link(
            root,
            &format!("sys/bus/virtio/devices/virtio{index}"),
            &format!("../../../devices/platform/virtio-mmio.{index}/virtio{index}"),
        );
        if let Some(name) = interface {
            write(root, &format!("{dir}/net/{name}/type"), "1\n");
            link(
                root,
                &format!("{dir}/net/{name}/device"),
                &format!("../../../virtio{index}"),
            );
            link(
                root,
                &format!("sys/class/net/{name}"),
                &format!("../../{}/net/{name}", dir.trim_start_matches("sys/")),
            );
        }
    }
    let vda = "sys/devices/platform/virtio-mmio.0/virtio0/block/vda";
    write(root, &format!("{vda}/size"), "2097152\n");
    link(root, &format!("{vda}/device"), "../../../virtio0");
    link(
        root,
        "sys/class/block/vda",
        "../../devices/platform/virtio-mmio.0/virtio0/block/vda",
    );

    let report = collect(root, Options::default());
    assert_eq!(report.virtualisation.as_deref(), Some("kvm"));
    let vda = &report.hardware.disk[0];
    assert_eq!(vda.unix_device_name.as_deref(), Some("/dev/vda"));
    assert_eq!(vda.driver_modules, ["virtio_blk", "virtio_mmio"]);
    assert_eq!(vda.sysfs_bus_id.as_deref(), Some("virtio0"));
    let storage = &report.hardware.storage_controller[0];
    assert_eq!(storage.vendor, Some(Id::Named("Virtio".into())));
    assert_eq!(
        storage.sysfs_id.as_deref(),
        Some("/devices/platform/virtio-mmio.0/virtio0")
    );
    let net = &report.hardware.network_controller[0];
    assert_eq!(net.unix_device_names, ["eth0"]);
    assert_eq!(net.driver_modules, ["virtio_mmio", "virtio_net"]);
    let eth0 = &report.hardware.network_interface[0];
    assert_eq!(eth0.unix_device_name.as_deref(), Some("eth0"));
    assert_eq!(eth0.driver.as_deref(), Some("virtio_net"));
    assert_eq!(
        report.facts().storage_modules,
        ["virtio_blk", "virtio_mmio"]
    );
}
