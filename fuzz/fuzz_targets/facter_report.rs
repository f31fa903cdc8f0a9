//! A machine's `facter.json` comes from anyone's repository, and from the machine itself
//! (`clan machines update-hardware-config`): reading it and deriving the facts services see
//! must never panic, and a report that reads must write back to one that reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(report) = clan_facter::Report::parse("facter.json", text) {
        let _ = report.facts();
        let again = clan_facter::Report::parse("facter.json", &report.to_file())
            .expect("a written report reads");
        assert_eq!(again, report);
    }
});
