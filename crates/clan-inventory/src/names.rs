//! Validated names of the fleet (machine, instance, role, tag, service): their rules live in
//! `clan_config::names`, one per name, shared with everything after the evaluation.

pub use clan_config::{InstanceName, MachineName, NameError, RoleName, ServiceName, TagName};
