//! Errors about the inventory; each names the file and the key, and most say what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// clan.toml or inventory.json is a link (refused: it could point anywhere), a FIFO, a
    /// device, too large, or unreadable.
    #[error(transparent)]
    Fs(#[from] clan_fs::Error),
    #[error("cannot write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        hint: Option<String>,
    },
    #[error("{}: `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
        hint: Option<String>,
    },
    #[error("`{key}` is defined in both `{}` and `{}`", first.display(), second.display())]
    DefinedTwice {
        key: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("`{key}` comes from `{}` and cannot be changed in clan.toml", path.display())]
    NotEditable { key: String, path: PathBuf },
}

impl clan_error::Hint for Error {
    /// What the user can do about it, when we know.
    fn hint(&self) -> Option<String> {
        match self {
            Self::Syntax { hint, .. } | Self::Invalid { hint, .. } => hint.clone(),
            Self::DefinedTwice { .. } => Some("remove one of the two definitions".to_owned()),
            Self::NotEditable { path, .. } => Some(format!("edit `{}` instead", path.display())),
            Self::Fs(_) => Some(
                "clan.toml and inventory.json must be regular files in the clan directory"
                    .to_owned(),
            ),
            Self::Read { .. } | Self::Write { .. } => None,
        }
    }

    /// clan.toml that does not parse or fails validation (as loaded, or as an edit would
    /// leave it) is a failed validation; the rest could not be done.
    fn exit(&self) -> clan_error::Exit {
        match self {
            Self::Syntax { .. } | Self::Invalid { .. } | Self::DefinedTwice { .. } => {
                clan_error::Exit::Failed
            }
            Self::Read { .. } | Self::Fs(_) | Self::Write { .. } | Self::NotEditable { .. } => {
                clan_error::Exit::Error
            }
        }
    }
}

clan_error::register!(Error);

/// "did you mean `x`?" for the candidate closest to `wrong`, when one is close enough: within
/// a few edits (transpositions count once) or very similar by Jaro-Winkler.
pub fn did_you_mean<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let max_edits = (wrong.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|candidate| {
            (
                strsim::damerau_levenshtein(wrong, candidate),
                strsim::jaro_winkler(wrong, candidate),
                candidate,
            )
        })
        .filter(|(edits, similarity, _)| *edits <= max_edits || *similarity > 0.8)
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, candidate)| format!("did you mean `{candidate}`?"))
}

/// serde reports unknown keys as "unknown field `x`, expected one of `a`, `b`"; turn the
/// candidates it lists into a did-you-mean.
pub(crate) fn hint_for_serde_message(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (wrong, expected) = rest.split_once('`')?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    did_you_mean(wrong, candidates.iter().copied())
        .or_else(|| Some(format!("valid keys here: {}", candidates.join(", "))))
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |newline| before.len() - newline - 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_message_becomes_a_did_you_mean() {
        let message = "unknown field `tagz`, expected one of `tags`, `machineClass`, `deploy`";
        assert_eq!(
            hint_for_serde_message(message).unwrap(),
            "did you mean `tags`?"
        );
        let far = "unknown field `zzz`, expected `name` or `input`";
        assert_eq!(
            hint_for_serde_message(far).unwrap(),
            "valid keys here: name, input"
        );
    }

    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }
}
