//! Hardware reports: [`update_config`] fetches a machine's report (`clan agent facter`, in
//! nixos-facter's format) over SSH, reaching the machine and checking its host key as deploys
//! do and putting this build's agent on it first when it has none, and replaces
//! `machines/<m>/facter.json` with it in one commit. The old file stays until the new report
//! has been read and the whole clan evaluated with it.

use std::path::{Path, PathBuf};

use clan_deploy::deploy::AgentBinary;
use clan_deploy::ssh::SshOptions;
use clan_facter::{Facts, Report, FACTER_JSON};
use clan_inventory::MachineName;

use crate::{change, Error, Progress};

/// Fetch machine `machine`'s hardware report and commit it.
pub struct UpdateHardwareRequest {
    pub machine: MachineName,
    /// Connect to `[user@]host[:port]` instead of the machine's target.
    pub target_host: Option<String>,
    pub ssh: SshOptions,
    /// The agent that writes the report (uploaded when the machine has no agent of this build).
    pub agent: AgentBinary,
    /// Also serial numbers, UUID-bearing device names and MAC addresses.
    pub with_serials: bool,
}

/// What [`update_config`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HardwareUpdate {
    pub machine: MachineName,
    /// The report, relative to the clan directory.
    pub path: PathBuf,
    /// Whether the file changed (and a commit was made).
    pub changed: bool,
    /// What services now see of the machine.
    pub facts: Facts,
}

/// `machines/<m>/facter.json`.
pub fn report_path(machine: &MachineName) -> PathBuf {
    Path::new("machines")
        .join(machine.as_str())
        .join(FACTER_JSON)
}

/// Fetches `request.machine`'s report and writes it to `machines/<m>/facter.json` (atomically,
/// after the clan evaluates with it), committing the change.
pub fn update_config(
    dir: &Path,
    request: &UpdateHardwareRequest,
    progress: &dyn Progress,
) -> Result<HardwareUpdate, Error> {
    let machine = &request.machine;
    let fleet = clan_eval::Fleet::open(dir)?;
    fleet.select_machines(std::slice::from_ref(machine), &[])?;
    let (_control_dir, host) = crate::deploy::connect_in(
        &fleet,
        dir,
        machine,
        request.target_host.as_deref(),
        &request.ssh,
    )?;
    let mut words = vec!["facter"];
    if request.with_serials {
        words.push("--with-serials");
    }
    let stdout = clan_deploy::deploy::run_own_agent(&host, &request.agent, &words)?;
    drop(host);
    let text = String::from_utf8_lossy(&stdout);
    let report = Report::parse(&format!("the report machine `{machine}` sent"), &text).map_err(
        |source| Error::BadHardwareReport {
            machine: machine.to_string(),
            source,
        },
    )?;
    // Written as clan writes every report: the same bytes for the same hardware.
    let content = report.to_file();
    let path = report_path(machine);
    let path_text = path.display().to_string();
    let change = change::begin(dir, &[path_text.as_str()], progress)?;
    clan_eval::check_with_hardware(dir, machine, &content)?;
    let tree = clan_fs::Tree::open(dir).map_err(clan_inventory::Error::from)?;
    let old = tree
        .read_optional(&path, clan_fs::DEFAULT_LIMIT)
        .map_err(clan_inventory::Error::from)?;
    let changed = old.as_deref() != Some(content.as_bytes());
    if changed {
        let machine_dir = path
            .parent()
            .expect("machines/<m>/facter.json has a parent");
        tree.create_dir_all(machine_dir, 0o755)
            .and_then(|_| tree.write(&path, content.as_bytes(), clan_fs::WriteOptions::new(0o644)))
            .map_err(clan_inventory::Error::from)?;
        change.commit(
            std::slice::from_ref(&path),
            &format!("machines: hardware report of {machine}"),
        )?;
    }
    Ok(HardwareUpdate {
        machine: machine.clone(),
        path,
        changed,
        facts: report.facts(),
    })
}
