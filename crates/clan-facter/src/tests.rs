use serde_json::json;

use super::*;

const VM: &str = include_str!("../tests/fixtures/nixos-facter-vm.json");

#[test]
fn a_nixos_facter_report_is_read_with_the_fields_clan_and_nixos_use() {
    let report = Report::parse("machines/vm/facter.json", VM).unwrap();
    assert_eq!(report.version, 1);
    assert_eq!(report.system, "x86_64-linux");
    assert_eq!(report.virtualisation.as_deref(), Some("kvm"));
    let disk = &report.hardware.disk[0];
    assert_eq!(disk.unix_device_name.as_deref(), Some("/dev/vda"));
    assert_eq!(disk.sysfs_id.as_deref(), Some("/class/block/vda"));
    assert_eq!(disk.driver_modules, ["virtio_blk", "virtio_pci"]);
    assert_eq!(disk.class_list, ["disk", "block_device"]);
    let ahci = &report.hardware.storage_controller[0];
    assert_eq!(ahci.vendor.as_ref().and_then(Id::value), Some(0x8086));
    assert_eq!(
        ahci.vendor.as_ref().and_then(Id::name),
        Some("Intel Corporation")
    );
    let nic = &report.hardware.network_controller[0];
    assert_eq!(nic.vendor, Some(Id::Named("Virtio".into())));
    assert_eq!(
        report.hardware.usb_controller[0].driver_modules,
        ["xhci_pci"]
    );

    let facts = report.facts();
    assert!(!facts.bare_metal);
    let cpu = facts.cpu.unwrap();
    assert_eq!(cpu.vendor.as_deref(), Some("AuthenticAMD"));
    assert_eq!((cpu.packages, cpu.threads), (1, Some(4)));
    assert_eq!(facts.memory_bytes, Some(2 << 30));
    assert_eq!(facts.disks[0].name, "/dev/vda");
    assert_eq!(facts.disks[0].size_bytes, Some(20 << 30));
    let names: Vec<_> = facts.network_interfaces.iter().map(|i| &i.name).collect();
    assert_eq!(names, ["lo", "ens3"]);
    assert_eq!(
        facts.network_interfaces[1].kind.as_deref(),
        Some("ethernet")
    );
    assert_eq!(facts.storage_modules, ["ahci", "virtio_blk", "virtio_pci"]);
}

/// clan-core's `machines/test-inventory-machine/facter.json` is this whole file.
#[test]
fn clan_cores_smallest_report_is_read() {
    let report = Report::parse(
        "facter.json",
        "{\n  \"version\": 1,\n  \"system\": \"x86_64-linux\"\n}\n",
    )
    .unwrap();
    assert_eq!(report.hardware, Hardware::default());
    let facts = report.facts();
    assert_eq!(facts.system, "x86_64-linux");
    assert!(facts.cpu.is_none() && facts.disks.is_empty() && !facts.bare_metal);
}

#[test]
fn a_report_survives_a_read_and_a_write_unchanged() {
    let report = Report::parse("facter.json", VM).unwrap();
    let written: serde_json::Value = serde_json::from_str(&report.to_file()).unwrap();
    let original: serde_json::Value = serde_json::from_str(VM).unwrap();
    assert_eq!(written, original);
}

/// A report from a newer nixos-facter (or clan) is kept whole, not rejected.
#[test]
fn fields_of_a_newer_version_are_kept() {
    let newer = json!({
        "version": 7,
        "system": "riscv64-linux",
        "virtualisation": "none",
        "tpm": {"version": "2.0"},
        "hardware": {
            "cpu": [{"vendor_name": "SiFive", "isa": "rv64gc"}],
            "disk": [{"unix_device_name": "/dev/nvme0n1", "namespace": 1,
                      "vendor": {"hex": "144d", "value": 5197, "vendor_id_source": "pci"}}],
            "npu": [{"model": "some accelerator"}]
        }
    });
    let report = Report::parse("facter.json", &newer.to_string()).unwrap();
    assert_eq!(report.version, 7);
    assert_eq!(report.extra["tpm"], json!({"version": "2.0"}));
    assert_eq!(report.hardware.cpu[0].extra["isa"], "rv64gc");
    assert_eq!(report.hardware.disk[0].extra["namespace"], 1);
    assert!(report.hardware.extra.contains_key("npu"));
    let written: serde_json::Value = serde_json::from_str(&report.to_file()).unwrap();
    assert_eq!(written, newer);
    assert!(report.facts().bare_metal);
}

#[test]
fn a_malformed_report_names_the_file_and_the_key() {
    let bad =
        r#"{"version": 1, "system": "x86_64-linux", "hardware": {"cpu": [{"family": "six"}]}}"#;
    let error = Report::parse("machines/web01/facter.json", bad).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("`machines/web01/facter.json` is not a hardware report: at `hardware.cpu[0].family`: invalid type: string \"six\""),
        "{message}"
    );
    let missing = Report::parse("f.json", r#"{"version": 1}"#).unwrap_err();
    assert!(
        missing.to_string().contains("missing field `system`"),
        "{missing}"
    );
    let truncated = Report::parse("f.json", r#"{"version": 1, "system": "x"#).unwrap_err();
    assert!(truncated.to_string().contains("EOF"), "{truncated}");
    let trailing = Report::parse("f.json", r#"{"system": "x"} {}"#).unwrap_err();
    assert!(trailing.to_string().contains("trailing"), "{trailing}");
}
