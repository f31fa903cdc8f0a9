//! Choosing how QEMU runs the guest: KVM when `/dev/kvm` really runs a standard guest, QEMU's
//! TCG emulation otherwise, always with the reason, since the difference is 10× in boot time.
//!
//! `/dev/kvm` existing is not enough: a PVM host (the `kvm_pvm` module, a CPU without
//! vmx/svm, as in this workshop's VMs) opens it but ordinary guest kernels do not boot under
//! it. `CLAN_VM_ACCEL=kvm|tcg` overrides the choice.

use std::fs;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Kvm,
    Tcg,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Kvm => "kvm",
            Mode::Tcg => "tcg",
        }
    }
}

/// The mode and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accel {
    pub mode: Mode,
    pub reason: String,
}

/// The accelerator for this host.
pub fn detect() -> Accel {
    match std::env::var("CLAN_VM_ACCEL").as_deref() {
        Ok("kvm") => return accel(Mode::Kvm, "CLAN_VM_ACCEL=kvm"),
        Ok("tcg") => return accel(Mode::Tcg, "CLAN_VM_ACCEL=tcg"),
        _ => {}
    }
    let cpu_flags = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let pvm = std::path::Path::new("/sys/module/kvm_pvm").exists();
    choose(
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map_err(|e| e.to_string()),
        &cpu_flags,
        pvm,
    )
}

fn accel(mode: Mode, reason: &str) -> Accel {
    Accel {
        mode,
        reason: reason.to_owned(),
    }
}

/// The decision from what the host shows: whether `/dev/kvm` opens, the CPU flags and whether
/// the PVM module is loaded.
fn choose(kvm: Result<fs::File, String>, cpuinfo: &str, pvm: bool) -> Accel {
    if let Err(error) = kvm {
        return accel(Mode::Tcg, &format!("/dev/kvm cannot be opened ({error})"));
    }
    let hardware = cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .any(|line| line.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if pvm && !hardware {
        return accel(
            Mode::Tcg,
            "/dev/kvm is a PVM host (kvm_pvm, no vmx/svm): ordinary guest kernels do not boot under it",
        );
    }
    if !hardware {
        return accel(
            Mode::Tcg,
            "the CPU has no vmx/svm flag: /dev/kvm cannot run a standard guest",
        );
    }
    accel(Mode::Kvm, "/dev/kvm with hardware virtualisation (vmx/svm)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Result<fs::File, String> {
        fs::File::open("/dev/null").map_err(|e| e.to_string())
    }

    #[test]
    fn pvm_hosts_and_missing_kvm_fall_back_to_tcg_with_the_reason() {
        let plain = "flags\t: fpu sse2\n";
        let vmx = "flags\t: fpu vmx sse2\n";
        assert_eq!(choose(file(), vmx, false).mode, Mode::Kvm);
        let pvm = choose(file(), plain, true);
        assert_eq!(pvm.mode, Mode::Tcg);
        assert!(pvm.reason.contains("PVM"));
        let missing = choose(Err("No such file or directory".into()), vmx, false);
        assert_eq!(missing.mode, Mode::Tcg);
        assert!(missing.reason.contains("No such file"));
        assert_eq!(choose(file(), plain, false).mode, Mode::Tcg);
    }
}
