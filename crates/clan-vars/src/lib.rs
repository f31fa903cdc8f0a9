//! clan's vars, as clan-core defines them: generators declared by services (files, prompts,
//! dependencies, sharing, validation, a script and the tools it needs) are run in a
//! bubblewrap sandbox; their public outputs are stored in `vars/…/<file>/value` and their
//! secret outputs as sops files encrypted in-process to the admin, the machines they deploy
//! to and those machines' groups, with clan-core's layout and recipient links.
//!
//! This crate owns everything under `<clan>/vars/`. It uses `clan-secrets` for sops files,
//! keys and the `sops/` tree, and never writes there except through it. It never prints,
//! never prompts (the binary asks; see [`Answers`]), never puts a secret in argv, the
//! environment of a process or a world-readable file, and replaces vars only atomically
//! (staging directory, one `syncfs`, `renameat2` exchange per generator). Committing is left
//! to the caller, with the paths it returns.
//!
//! # For the deploy code
//!
//! - [`deployable_secrets`]`(clan_dir, machine, &MachineConfig)` lists the secret vars to
//!   place on a machine, each a [`DeployableSecret`] with its generator, file, whether it is
//!   shared, the sops file (still encrypted, readable with the machine's key), owner, group,
//!   mode and `neededFor` phase. A var not generated yet is [`Error::Missing`].
//! - [`machine_age_key`]`(clan_dir, machine, &admin_identities)` decrypts the machine's age
//!   private key (`sops/secrets/<machine>-age.key`) for upload to the machine.
//!
//! # Generating
//!
//! ```text
//! Graph::build(machines' generators) -> Plan::new(graph, store, selection)
//!   -> plan.prompts(…) (ask them all) -> generate::run(…, each generator's step as it goes)
//!   -> Report { changed, failed, … }
//! ```

mod deploy;
mod error;
pub mod generate;
mod graph;
pub mod ops;
mod prompt;
pub mod sandbox;
mod store;

pub use deploy::{
    deployable_secrets, machine_age_key, machine_clan_secrets, ssh_host_key, DeployableSecret,
    CLAN_SECRETS,
};
pub use error::Error;
pub use generate::{GeneratorStep, Plan, Report, RunOptions, Selection};
pub use graph::{stored_files, FleetGenerator, GeneratorKey, Graph, Placement};
pub use prompt::{Answers, PromptRequest};
pub use sandbox::Confinement;
pub use store::{validation_hash, VarsStore, VALIDATION_HASH};
