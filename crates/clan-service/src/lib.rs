//! Clan services: Starlark files that declare a manifest, roles with JSON-Schema settings
//! interfaces, and functions that turn an instance's members and settings into exports and
//! MachineConfig fragments. The service API is documented in `docs/services.md`.
//!
//! This crate owns loading services (built-ins embedded in the binary, and a clan's
//! `services/<name>/service.star`), and calling their functions in a hermetic, bounded
//! Starlark runtime: no file, network, clock or random access, and a step budget so a looping
//! service fails with a clear error. It never decides who is in a role or merges fragments:
//! that is `clan-eval`'s job.

mod builtin;
mod error;
mod runtime;

pub use builtin::{BUILTIN_SERVICES, PRELUDE};
pub use error::Error;
pub use runtime::{
    CallOutput, InstanceCall, MachineCall, Manifest, RoleDef, Service, Shared, SharedValue,
};
