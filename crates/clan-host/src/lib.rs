//! What test machines (`clan-testbed`) and micro VMs (`clan-vm`) both need from the admin's
//! host, so that the product's VMs do not link the test fleet: running host tools from argv
//! vectors and naming the Debian packages that provide them ([`tools`]), and the cached,
//! read-only Debian root filesystem both boot from ([`rootfs`]).

mod error;
pub mod rootfs;
pub mod tools;

pub use error::{Error, Result};
pub use rootfs::{default_cache_dir, root_filesystem, DEFAULT_CACHE_DIR};
pub use tools::{
    command, describe, install_packages, is_root, missing_packages, require, run, Tool, DEBOOTSTRAP,
};
