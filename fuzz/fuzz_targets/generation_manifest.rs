//! The agent reads a generation's manifest from an upload (and later from its own store):
//! framing, JSON, validation against the blobs must never panic, whatever the bytes. The
//! manifest's id is computed here so the fuzzer gets past the id check to the JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = clan_deploy::generation::hash(data)[..32].to_owned();
    let mut bundle = format!("clan-generation 1\nmanifest {}\n", data.len()).into_bytes();
    bundle.extend_from_slice(data);
    bundle.extend_from_slice(b"\nend\n");
    let _ = clan_deploy::generation::read_bundle(&bundle[..], &id);
    // The raw bytes as the framing itself.
    let _ = clan_deploy::generation::read_bundle(data, &id);
});
