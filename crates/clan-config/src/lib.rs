//! MachineConfig: what a machine should look like (files, units, packages, users and groups,
//! vars generators, state to back up, firewall ports, `/etc/hosts` entries, NixOS settings), the contract between
//! services, which produce fragments of it, and deployment, which makes a machine match it.
//!
//! This crate owns the types, the validated names in them and in the fleet (machines, instances,
//! tags, roles, services, classes, paths, units, accounts, packages, modes) and
//! the merge of fragments with conflict detection that names both sources. It never evaluates services or touches a machine.

mod merge;
mod model;
mod names;

pub use merge::{Conflict, Fragment};
pub use model::{
    BackupProvider, Backups, BadFragment, File, Firewall, Generator, GeneratorFile, Group,
    MachineConfig, Prompt, PromptType, SecretAccess, State, Unit, User, VarRef, CLAN_SECRETS,
    SECRET_PLACEHOLDER_PREFIX,
};
pub use names::{
    AbsolutePath, AccountName, CalendarEvent, ConfigName, FileMode, HostName, InstanceName,
    InvalidName, MachineClass, MachineName, NameError, PackageName, RoleName, ServiceName,
    StateName, TagName, UnitName,
};
