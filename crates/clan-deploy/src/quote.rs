//! The one place an argv vector becomes a shell command line (OpenSSH hands the remote side a
//! single string that the login shell splits again). Every word is quoted, always.

/// Quotes one word for a POSIX shell: wrapped in single quotes, each `'` written as `'\''`.
pub fn quote_word(word: &str) -> String {
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('\'');
    for c in word.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// Quotes every word of `argv` and joins them with spaces.
pub fn command_line<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|word| quote_word(word.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn words_are_single_quoted() {
        assert_eq!(command_line(&["ls", "-l"]), "'ls' '-l'");
        assert_eq!(quote_word(""), "''");
        assert_eq!(quote_word("it's"), "'it'\\''s'");
    }

    /// The real shell gives back exactly the words, whatever they contain.
    #[test]
    fn shell_splits_back_to_the_same_words() {
        let words = [
            "plain",
            "with space",
            "it's",
            "$(touch /tmp/clan-quote-pwned)",
            "`id`",
            "a\nb",
            "*",
            "\\",
            "\"double\"",
            "",
            "-n",
            "é ☃",
        ];
        let mut argv = vec!["printf", "%s\\0"];
        argv.extend(words);
        let output = Command::new("sh")
            .args(["-c", &command_line(&argv)])
            .output()
            .expect("sh runs");
        assert!(output.status.success());
        let got: Vec<&[u8]> = output.stdout.split(|b| *b == 0).collect();
        let expected: Vec<&[u8]> = words
            .iter()
            .map(|w| w.as_bytes())
            .chain([&b""[..]])
            .collect();
        assert_eq!(got, expected);
        assert!(!std::path::Path::new("/tmp/clan-quote-pwned").exists());
    }
}
