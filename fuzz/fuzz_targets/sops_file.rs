//! sops files are untrusted input (anyone with write access to the repository can change
//! them): parsing, writing back, and decrypting must never panic, whatever the bytes.
#![no_main]

use std::sync::OnceLock;

use clan_secrets::{Identities, SopsFile};
use libfuzzer_sys::fuzz_target;

fn identities() -> &'static Identities {
    static IDENTITIES: OnceLock<Identities> = OnceLock::new();
    IDENTITIES.get_or_init(|| {
        // The test key of clan-core's fixtures: fuzzing from those files reaches the
        // data-key and MAC paths.
        Identities::parse(
            "AGE-SECRET-KEY-1UCXEUJH6JXF8LFKWFHDM4N9AQE2CCGQZGXLUNV4TKR5KY0KC8FDQ2TY4NX",
            "fuzz",
        )
        .expect("valid key")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(file) = SopsFile::parse(data) else {
        return;
    };
    let written = file.to_bytes();
    let reparsed = SopsFile::parse(&written).expect("what we write parses");
    assert_eq!(reparsed.to_bytes(), written, "writing is stable");
    let _ = file.recipients();
    let _ = file.decrypt(identities());
    let _ = file.decrypt_with_data_key(&[7u8; 32]);
});
