//! Machines of the clan in QEMU micro VMs (`clan vms`).
//!
//! Owns the runner: the root image made once from the testbed's cached Debian tree with a
//! kernel added (`image`), the small initramfs written here (`initramfs`), the choice of KVM
//! or TCG with its reason (`accel`), each machine's VM directory with its kept disk, keys,
//! console log and QMP socket, and launching, stopping and listing VMs (`vm`), QMP through
//! the `qapi` crate (`qmp`). A booted VM runs sshd and is deployed by the normal deploy path
//! (clan-lib does that); this crate never evaluates the clan or handles its secrets.
//!
//! It must never signal a process it did not start (a PID is trusted only when QEMU's command
//! line names the VM's own QMP socket), nor put a secret on a command line: the VM's first
//! host key travels in its initramfs, a 0600 file in a 0700 directory.

mod accel;
mod error;
mod image;
mod initramfs;
mod process;
mod qmp;
mod vm;

pub use accel::{detect as detect_accel, Accel, Mode};
pub use error::{Error, Result};
pub use image::{Image, PACKAGES};
pub use process::{Tool, TOOLS};
pub use vm::{
    boot_times, console_tail, list, machines, run, stop, vms_dir, BootTimes, Booted, Lan, Publish,
    RunOptions, Running, VmDir, MASKED_UNITS,
};
