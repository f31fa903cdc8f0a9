//! The hardware report of a machine, `machines/<m>/facter.json`, in nixos-facter's format
//! (numtide/nixos-facter, the file clan-core and NixOS read): its typed model ([`Report`]),
//! parsing with errors that name the file and the key ([`Report::parse`]), and the summary
//! services see during evaluation ([`Facts`]).
//!
//! Readers keep what they do not know: every object of the model carries the fields it does
//! not name in `extra`, so a report written by a newer nixos-facter (or clan) survives a read
//! and a write unchanged. Only the fields clan and NixOS read are typed.
//!
//! This crate collects nothing (the agent does, from sysfs and procfs) and does no I/O.

mod facts;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use facts::{CpuFacts, DiskFacts, Facts, InterfaceFacts};

/// The report format version clan writes: nixos-facter's current one.
pub const REPORT_VERSION: u64 = 1;

/// The file name of a machine's report in `machines/<m>/`.
pub const FACTER_JSON: &str = "facter.json";

/// A whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Raised by nixos-facter on breaking changes (reports before versioning have none).
    #[serde(default)]
    pub version: u64,
    /// `<arch>-linux`, as Nix names systems.
    pub system: String,
    /// systemd-detect-virt's name of the hypervisor or container (`none` on bare metal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtualisation: Option<String>,
    /// Whether the machine booted through UEFI (clan's addition; absent in nixos-facter's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uefi: Option<bool>,
    #[serde(default)]
    pub hardware: Hardware,
    /// `smbios`, `swap` and whatever a newer writer adds.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The devices of a report by hwinfo class. The classes clan reads are typed; the others
/// (`bridge`, `hub`, `monitor`, …) stay in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    /// One entry per physical CPU package.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpu: Vec<Cpu>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory: Vec<Device>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk: Vec<Device>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_interface: Vec<Device>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_controller: Vec<Device>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage_controller: Vec<Device>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub graphics_card: Vec<Device>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usb_controller: Vec<Device>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One physical CPU, from `/proc/cpuinfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// `GenuineIntel`, `AuthenticAMD`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stepping: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bugs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_id: Option<u64>,
    /// Logical processors of this package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub siblings: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u64>,
    /// `bogomips`, `cache`, `address_sizes`, …
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One device (disk, interface, controller, memory), as hwinfo describes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// hwinfo's classes of the device, most specific first (`disk`, `block_device`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_list: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_type: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_class: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_class: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_interface: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_vendor: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_device: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The device's path under `/sys` (`/class/block/vda`, `/devices/pci0000:00/0000:00:1f.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysfs_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysfs_bus_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysfs_device_link: Option<String>,
    /// `/dev/vda`, `eth0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_device_name: Option<String>,
    /// Every name of the device (`/dev/disk/by-path/…` included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unix_device_names: Vec<String>,
    /// Sizes, addresses, interrupts (`{"type": "size", …}`), kept as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_module: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drivers: Vec<String>,
    /// The kernel modules driving the device and the buses it hangs on (what an initrd needs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub driver_modules: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_alias: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A vendor, device or class id: hwinfo writes `{"hex": "8086", "name": "Intel
/// Corporation", "value": 32902}`, or only a name (`"Virtio"`) for ids without a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Named(String),
    Number(IdNumber),
}

/// An [`Id`] with a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdNumber {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub value: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Id {
    /// An id with a number, written as hwinfo does (four hex digits).
    pub fn number(value: u64, name: Option<&str>) -> Id {
        Id::Number(IdNumber {
            hex: Some(format!("{value:04x}")),
            name: name.map(str::to_owned),
            value,
            extra: Map::new(),
        })
    }

    pub fn value(&self) -> Option<u64> {
        match self {
            Id::Named(_) => None,
            Id::Number(id) => Some(id.value),
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Id::Named(name) => Some(name),
            Id::Number(id) => id.name.as_deref(),
        }
    }
}

/// A report that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("`{file}` is not a hardware report: {}{message}", key.as_deref().map(|key| format!("at `{key}`: ")).unwrap_or_default())]
pub struct ParseError {
    /// The file as the user knows it (`machines/web01/facter.json`).
    pub file: String,
    /// Where in the document (`hardware.cpu[0].family`), when known.
    pub key: Option<String>,
    pub message: String,
}

impl clan_error::Hint for ParseError {
    fn hint(&self) -> Option<String> {
        Some(
            "fix the file, or remove it and write it again from the machine with `clan \
             machines update-hardware-config <machine>`"
                .to_owned(),
        )
    }

    fn exit(&self) -> clan_error::Exit {
        clan_error::Exit::Failed
    }
}

clan_error::register!(ParseError);

impl Report {
    /// Parses the report in `text`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Report, ParseError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let report: Report = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            ParseError {
                file: file.to_owned(),
                key: (path != ".").then_some(path),
                message: inner.to_string(),
            }
        })?;
        deserializer.end().map_err(|e| ParseError {
            file: file.to_owned(),
            key: None,
            message: e.to_string(),
        })?;
        Ok(report)
    }

    /// The report as the file holds it: pretty JSON, ending in a newline.
    pub fn to_file(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a report is plain JSON data");
        text.push('\n');
        text
    }

    /// What services see of the report.
    pub fn facts(&self) -> Facts {
        Facts::of(self)
    }
}

#[cfg(test)]
mod tests;
