//! The root image every VM boots: the testbed's cached Debian tree with a kernel and a static
//! busybox added, turned once into an ext4 image (`mkfs.ext4 -d`, no mount needed) cached
//! beside it. VMs never write to it: each machine's disk is a qcow2 overlay backed by it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::process::{self, MKFS_EXT4};

/// What the VMs' tree adds to the testbed's: Debian's cloud kernel (virtio drivers and ext4,
/// no hardware drivers a VM never needs; modules installed in the tree so the guest loads
/// nftables and tun itself) and busybox for the initramfs.
pub const PACKAGES: &[&str] = &["linux-image-cloud-amd64", "busybox-static"];

/// Size of the root file system; the image file is sparse, so only what is used takes disk.
const IMAGE_SIZE: &str = "4G";

/// The cached tree, its kernel and the image made from it.
#[derive(Debug, Clone)]
pub struct Image {
    pub root: PathBuf,
    pub kernel_version: String,
    pub vmlinuz: PathBuf,
    /// The raw ext4 image, the backing file of every machine's disk.
    pub disk: PathBuf,
}

impl Image {
    /// The image under `cache_dir`, building the tree and the image first when missing.
    pub fn ensure(cache_dir: &Path, progress: fn(&str)) -> Result<Image> {
        // An image found here is booted and trusted: no one else may have put it there.
        fs::create_dir_all(cache_dir).map_err(clan_error::io("create", cache_dir))?;
        if !clan_fs::private_ancestry(cache_dir) {
            return Err(Error::SharedStateDir {
                path: cache_dir.to_owned(),
            });
        }
        let packages: Vec<String> = PACKAGES.iter().map(|p| (*p).to_owned()).collect();
        let root = clan_host::root_filesystem(cache_dir, &packages, progress)?;
        let (kernel_version, vmlinuz) = crate::initramfs::kernel(&root)?;
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let disk = cache_dir.join(format!("{name}.ext4"));
        if !disk.is_file() {
            progress("making the VM root image from the Debian tree (once; a few seconds)");
            process::require(MKFS_EXT4)?;
            let partial = cache_dir.join(format!(".{name}.ext4.{}", std::process::id()));
            let built = process::run(
                process::command(MKFS_EXT4)
                    .args(["-q", "-F", "-L", "clan-root", "-d"])
                    .arg(&root)
                    .arg(&partial)
                    .arg(IMAGE_SIZE),
            )
            .and_then(|()| {
                fs::rename(&partial, &disk)
                    .map_err(|e| clan_error::io("move the finished image to", &disk)(e).into())
            });
            if built.is_err() {
                let _ = fs::remove_file(&partial);
            }
            built?;
        }
        Ok(Image {
            root,
            kernel_version,
            vmlinuz,
            disk,
        })
    }
}
