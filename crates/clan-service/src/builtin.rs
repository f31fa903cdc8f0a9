//! The built-in services, written in the same Starlark as a clan's own and embedded in the
//! binary: `(name, source)`.

/// The `clan` namespace every module sees (see the runtime).
pub const PRELUDE: &str = include_str!("clan.star");

pub const BUILTIN_SERVICES: &[(&str, &str)] = &[
    ("borgbackup", include_str!("../services/borgbackup.star")),
    ("data-mesher", include_str!("../services/data-mesher.star")),
    ("hello-world", include_str!("../services/hello-world.star")),
    ("internet", include_str!("../services/internet.star")),
    ("localbackup", include_str!("../services/localbackup.star")),
    ("microcode", include_str!("../services/microcode.star")),
    ("restic", include_str!("../services/restic.star")),
    ("sshd", include_str!("../services/sshd.star")),
    ("tor", include_str!("../services/tor.star")),
    ("users", include_str!("../services/users.star")),
    ("wireguard", include_str!("../services/wireguard.star")),
    ("yggdrasil", include_str!("../services/yggdrasil.star")),
];
