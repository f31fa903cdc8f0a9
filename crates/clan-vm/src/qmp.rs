//! QEMU's control socket, spoken through the `qapi` crate: the power button and `quit`.

use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::error::{Error, Result};

fn execute<C: qapi::Command>(machine: &str, socket: &Path, command: &C) -> Result<()> {
    let failed = |source: std::io::Error| Error::Qmp {
        machine: machine.to_owned(),
        socket: socket.to_owned(),
        source,
    };
    let stream = UnixStream::connect(socket).map_err(failed)?;
    let mut qmp = qapi::Qmp::from_stream(&stream);
    qmp.handshake()
        .map_err(|e| failed(std::io::Error::other(e.to_string())))?;
    qmp.execute(command)
        .map_err(|e| failed(std::io::Error::other(e.to_string())))?;
    Ok(())
}

/// Presses the VM's ACPI power button: systemd shuts the guest down cleanly.
pub fn powerdown(machine: &str, socket: &Path) -> Result<()> {
    execute(machine, socket, &qapi::qmp::system_powerdown {})
}

/// Ends QEMU at once.
pub fn quit(machine: &str, socket: &Path) -> Result<()> {
    execute(machine, socket, &qapi::qmp::quit {})
}
