//! What a test does when this host cannot run it (not root, a tool missing): it says why and
//! returns, except where skipping is refused: `.ci/run` installs everything and sets
//! `CLAN_TEST_NO_SKIP=1`, so there a test that would skip fails instead.

/// The variable that turns a skip into a failure.
pub const NO_SKIP: &str = "CLAN_TEST_NO_SKIP";

/// Says why the calling test cannot run here (the test then returns); panics instead when
/// [`NO_SKIP`] is `1`.
pub fn skip(reason: impl std::fmt::Display) {
    if std::env::var_os(NO_SKIP).is_some_and(|value| value == "1") {
        panic!("{NO_SKIP}=1, but this test cannot run here: {reason}");
    }
    eprintln!("skipping: {reason}");
}
