//! [`Facts`]: the part of a report services decide on (`ctx.machine.hardware` in Starlark,
//! `hardware` in `clan machines show --json`), small and stable where the report is neither.

use serde::{Deserialize, Serialize};

use crate::{Device, Report};

/// What a machine is, for services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Facts {
    /// `x86_64-linux`, …
    pub system: String,
    /// systemd-detect-virt's name (`none`, `kvm`, `qemu`, `systemd-nspawn`, …), when reported.
    pub virtualisation: Option<String>,
    /// Neither a VM nor a container: firmware, microcode and power management are the
    /// machine's own business.
    pub bare_metal: bool,
    pub uefi: Option<bool>,
    /// The first CPU package (machines mix no vendors).
    pub cpu: Option<CpuFacts>,
    pub memory_bytes: Option<u64>,
    pub disks: Vec<DiskFacts>,
    pub network_interfaces: Vec<InterfaceFacts>,
    /// Modules the disks and their controllers need (what an initrd loads), sorted.
    pub storage_modules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuFacts {
    /// `GenuineIntel`, `AuthenticAMD`, …
    pub vendor: Option<String>,
    pub model_name: Option<String>,
    pub family: Option<u64>,
    pub model: Option<u64>,
    /// Physical packages.
    pub packages: usize,
    /// Logical processors over all packages, when the report says.
    pub threads: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskFacts {
    /// `/dev/vda`.
    pub name: String,
    pub size_bytes: Option<u64>,
    pub driver_modules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceFacts {
    /// `eth0`.
    pub name: String,
    /// hwinfo's sub-class, lower case: `ethernet`, `loopback`, `wlan`, …
    pub kind: Option<String>,
    pub driver_modules: Vec<String>,
}

impl Facts {
    pub(crate) fn of(report: &Report) -> Facts {
        let hardware = &report.hardware;
        let cpu = hardware.cpu.first().map(|first| CpuFacts {
            vendor: first.vendor_name.clone(),
            model_name: first.model_name.clone(),
            family: first.family,
            model: first.model,
            packages: hardware.cpu.len(),
            threads: hardware
                .cpu
                .iter()
                .map(|cpu| cpu.siblings)
                .sum::<Option<u64>>(),
        });
        let disks = hardware
            .disk
            .iter()
            .filter_map(|disk| {
                Some(DiskFacts {
                    name: disk.unix_device_name.clone()?,
                    size_bytes: disk_size(disk),
                    driver_modules: disk.driver_modules.clone(),
                })
            })
            .collect();
        let network_interfaces = hardware
            .network_interface
            .iter()
            .filter_map(|interface| {
                Some(InterfaceFacts {
                    name: interface.unix_device_name.clone()?,
                    kind: interface
                        .sub_class
                        .as_ref()
                        .and_then(|class| class.name())
                        .map(str::to_lowercase),
                    driver_modules: interface.driver_modules.clone(),
                })
            })
            .collect();
        let mut storage_modules: Vec<String> = hardware
            .disk
            .iter()
            .chain(&hardware.storage_controller)
            .flat_map(|device| device.driver_modules.iter().cloned())
            .collect();
        storage_modules.sort();
        storage_modules.dedup();
        Facts {
            system: report.system.clone(),
            virtualisation: report.virtualisation.clone(),
            bare_metal: report.virtualisation.as_deref() == Some("none"),
            uefi: report.uefi,
            cpu,
            memory_bytes: hardware.memory.iter().find_map(memory_size),
            disks,
            network_interfaces,
            storage_modules,
        }
    }
}

/// The `value` of the first resource of type `kind` in `device`, as a number.
fn resource<'a>(device: &'a Device, kind: &str) -> Option<&'a serde_json::Value> {
    device
        .resources
        .iter()
        .find(|resource| resource["type"] == kind)
}

/// hwinfo's `size` resource of a disk: `value_1` sectors of `value_2` bytes.
fn disk_size(disk: &Device) -> Option<u64> {
    let size = resource(disk, "size")?;
    if size["unit"] != "sectors" {
        return None;
    }
    let sectors = size["value_1"].as_u64()?;
    let sector = size["value_2"].as_u64().unwrap_or(512);
    sectors.checked_mul(sector)
}

/// Main memory: the `phys_mem` resource's range, in bytes.
fn memory_size(memory: &Device) -> Option<u64> {
    resource(memory, "phys_mem")?["range"].as_u64()
}
